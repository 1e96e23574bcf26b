"""Run a model with the native runner (qexport-run), natively or under qemu-aarch64, behind the
small surface of an ``onnxruntime.InferenceSession`` that :func:`qexport.validate.check_parity`
uses: ``get_inputs()``, ``get_outputs()``, ``run(None, feeds)``.

Each ``run`` writes the feeds as .npy files, runs ``qexport-run`` once (so a whole batch of
samples costs one emulator start) and reads the .npy outputs it wrote.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .fetch import DeployError

__all__ = ["DEFAULT_CPUS", "AARCH64_SYSROOT", "RunnerError", "RunnerSession", "EmulatedRun", "validate_on_runner"]

#: CPUs emulated by ``qexport validate --target aarch64``: with dotprod (ARMv8.2) and without (ARMv8.0).
DEFAULT_CPUS = ("cortex-a76", "cortex-a53")
#: Debian's aarch64 cross sysroot (ld-linux-aarch64.so.1, libc, libstdc++): qemu's -L.
AARCH64_SYSROOT = "/usr/aarch64-linux-gnu"

_ONNX_TYPES = {1: "float", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
               10: "float16", 11: "double", 12: "uint32", 13: "uint64"}


class RunnerError(DeployError):
    """qexport-run exited with an error (its message is included)."""


@dataclass
class _NodeArg:
    """What ``onnxruntime.NodeArg`` offers: name, shape (ints, or dimension names / None), type."""

    name: str
    shape: list
    type: str


def _node_args(values) -> list[_NodeArg]:
    out = []
    for v in values:
        tt = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
        out.append(_NodeArg(v.name, shape, f"tensor({_ONNX_TYPES.get(tt.elem_type, tt.elem_type)})"))
    return out


class RunnerSession:
    """An InferenceSession look-alike that runs ``qexport-run``.

    Args:
        model: the serialized model (bytes) or the path of an .onnx file.
        runner: the qexport-run binary.
        ops: libqexport_ops.so for the runner's architecture.
        ort: libonnxruntime.so(.1) for the runner's architecture (None: the runner's default,
            libonnxruntime.so.1 beside it).
        qemu: qemu-aarch64 binary to run the runner with (None: run it directly).
        cpu: qemu's ``-cpu`` model (e.g. ``cortex-a76``, ``cortex-a53``).
        sysroot: qemu's ``-L`` (the target's dynamic loader and libc), default /usr/aarch64-linux-gnu.
        threads: the runner's ``--threads`` (None: its default, all CPUs).
        timeout: seconds one runner invocation may take.
        qemu_args: more qemu options, before the program (e.g. ``-plugin lib.so``).
    """

    def __init__(self, model: bytes | str | os.PathLike, *, runner: str | os.PathLike, ops: str | os.PathLike,
                 ort: str | os.PathLike | None = None, qemu: str | os.PathLike | None = None, cpu: str | None = None,
                 sysroot: str | os.PathLike | None = None, threads: int | None = None, timeout: float = 3600.0,
                 workdir: str | os.PathLike | None = None, qemu_args: Sequence[str] = ()):
        import onnx

        self._tmp = tempfile.TemporaryDirectory(prefix="qexport-run-", dir=workdir)
        self.workdir = Path(self._tmp.name)
        if isinstance(model, (bytes, bytearray)):
            self.model_path = self.workdir / "model.onnx"
            self.model_path.write_bytes(bytes(model))
            proto = onnx.load_from_string(bytes(model))
        else:
            self.model_path = Path(model)
            proto = onnx.load(str(model), load_external_data=False)
        inits = {i.name for i in proto.graph.initializer}
        self._inputs = _node_args([i for i in proto.graph.input if i.name not in inits])
        self._outputs = _node_args(proto.graph.output)
        self.runner, self.ops = Path(runner), Path(ops)
        self.ort = Path(ort) if ort else None
        self.threads = threads
        self.timeout = timeout
        self.prefix: list[str] = []
        if qemu is not None:
            root = Path(sysroot or AARCH64_SYSROOT)
            if not (root / "lib" / "ld-linux-aarch64.so.1").exists():
                raise DeployError(f"{root} holds no lib/ld-linux-aarch64.so.1 (the aarch64 C library qemu needs): "
                                  "install it with `apt-get install g++-aarch64-linux-gnu` (it brings libc6-arm64-cross "
                                  "and libstdc++6-arm64-cross)")
            self.prefix = [str(qemu), *(["-cpu", cpu] if cpu else []), "-L", str(root), *qemu_args]
        self.cpu = cpu
        self.last_stdout = ""
        self.last_stderr = ""  # e.g. the kernel-path lines of QEXPORT_KERNEL_TRACE=1
        self.last_wall_s = 0.0
        self.last_median_ms: float | None = None
        self.runs = 0
        self.total_wall_s = 0.0

    def get_inputs(self) -> list[_NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[_NodeArg]:
        return list(self._outputs)

    def command(self, feeds: dict[str, str], output_dir: str | None, extra: Sequence[str] = ()) -> list[str]:
        """The command line that runs the model on ``feeds`` (input name -> .npy path)."""
        cmd = [*self.prefix, str(self.runner), str(self.model_path), "--ops", str(self.ops)]
        if self.ort is not None:
            cmd += ["--ort", str(self.ort)]
        if self.threads is not None:
            cmd += ["--threads", str(int(self.threads))]
        for name, path in feeds.items():
            cmd += ["--input", f"{name}={path}"]
        if output_dir is not None:
            cmd += ["--output-dir", str(output_dir)]
        return cmd + list(extra)

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray], run_options=None) -> list[np.ndarray]:
        step = self.workdir / f"run{self.runs}"
        step.mkdir()
        files = {}
        for i, (name, value) in enumerate(feeds.items()):
            files[name] = str(step / f"input{i}.npy")
            np.save(files[name], np.ascontiguousarray(value))
        out_dir = step / "out"
        cmd = self.command(files, str(out_dir))
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise RunnerError(f"qexport-run did not finish within {self.timeout:.0f} s: {' '.join(cmd)}") from exc
        self.last_wall_s = time.perf_counter() - t0
        self.total_wall_s += self.last_wall_s
        self.runs += 1
        self.last_stdout, self.last_stderr = proc.stdout, proc.stderr
        if proc.returncode != 0:
            msg = proc.stderr.strip() or proc.stdout.strip()[-2000:] or f"exit status {proc.returncode}"
            raise RunnerError(f"qexport-run failed{f' (-cpu {self.cpu})' if self.cpu else ''}: {msg}")
        m = re.search(r"time: median ([0-9.]+) ms", proc.stdout)
        self.last_median_ms = float(m.group(1)) if m else None
        table = {}
        for line in (out_dir / "outputs.tsv").read_text().splitlines():
            name, file, *_ = line.split("\t")
            table[name] = np.load(out_dir / file)
        shutil.rmtree(step, ignore_errors=True)
        names = list(output_names) if output_names else [o.name for o in self._outputs]
        missing = [n for n in names if n not in table]
        if missing:
            raise RunnerError(f"qexport-run wrote no output {missing} (it wrote {sorted(table)})")
        return [table[n] for n in names]

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> "RunnerSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class EmulatedRun:
    cpu: str
    report: object  # qexport.validate.ParityReport
    seconds: float  # wall time of the runner invocations (emulated inference, incl. start-up)
    runner_ms: float | None  # the runner's own timing of the last run (session.Run only)


def validate_on_runner(model, proto, x: np.ndarray, y: np.ndarray | None = None, *, runner: str | os.PathLike,
                       ops: str | os.PathLike, ort: str | os.PathLike | None = None, qemu: str | os.PathLike | None = None,
                       cpus: Sequence[str | None] = DEFAULT_CPUS, threads: int | None = None,
                       batch_size: int | None = None, tolerances=None, sysroot: str | os.PathLike | None = None,
                       progress: Callable[[int], None] | None = None,
                       on_cpu: Callable[[str | None], None] | None = None) -> list[EmulatedRun]:
    """:func:`qexport.validate.check_parity` with the model run by ``qexport-run`` (under qemu with
    each of ``cpus`` when ``qemu`` is given): the same checks as on x86 (activation codes of every
    quantized layer, packed weights, outputs, top-1 agreement, SQNR).

    ``batch_size`` defaults to all of ``x`` at once: one runner (emulator) start per CPU.
    """
    from ..validate import check_parity

    results = []
    for cpu in cpus if qemu is not None else [None]:
        if on_cpu:
            on_cpu(cpu)
        sessions: list[RunnerSession] = []

        def factory(data: bytes) -> RunnerSession:
            s = RunnerSession(data, runner=runner, ops=ops, ort=ort, qemu=qemu, cpu=cpu, sysroot=sysroot, threads=threads)
            sessions.append(s)
            return s

        try:
            report = check_parity(model, proto, x, y, session_factory=factory, batch_size=batch_size or max(1, len(x)),
                                  tolerances=tolerances, progress=progress)
        finally:
            for s in sessions:
                s.close()
        wall = sum(s.total_wall_s for s in sessions)
        results.append(EmulatedRun(cpu or "native", report, wall, sessions[-1].last_median_ms if sessions else None))
    return results
