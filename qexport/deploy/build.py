"""Build the custom-op library and the qexport-run runner for a target CPU (x86_64 or aarch64).

``build_ops("aarch64", "dist/")`` configures custom_ops/ with
custom_ops/toolchains/aarch64-linux-gnu.cmake (Debian's g++-aarch64-linux-gnu) and
``QEXPORT_BUILD_RUNNER=ON``, builds, and collects the three files a device needs in ``dist/``:

* ``qexport-run``          the runner (loads ONNX Runtime at run time),
* ``libqexport_ops.so``    the ai.qexport kernels,
* ``libonnxruntime.so.1``  ONNX Runtime for the target, from its onnxruntime wheel.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .fetch import DeployError, fetch_ort_library

__all__ = ["TARGETS", "BuildResult", "build_ops", "elf_machine", "source_dir", "cross_compiler_hint"]

#: target -> (ELF e_machine, toolchain file or None for a native build, compiler to check, its Debian package)
TARGETS: dict[str, tuple[int, str | None, str, str]] = {
    "x86_64": (62, None, "g++", "g++"),
    "aarch64": (183, "toolchains/aarch64-linux-gnu.cmake", "aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu"),
}
_ELF_NAMES = {62: "x86_64", 183: "aarch64", 40: "arm", 3: "x86"}


@dataclass
class BuildResult:
    target: str
    outdir: Path
    runner: Path
    ops: Path
    ort: Path | None
    build_dir: Path
    seconds: float
    log: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.runner, self.ops, self.ort) if p is not None]


def elf_machine(path: str | os.PathLike) -> str | None:
    """The architecture an ELF file is built for ('aarch64', 'x86_64', ...), None if not ELF."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return _ELF_NAMES.get(machine, f"e_machine {machine}")


def source_dir() -> Path:
    """The custom_ops/ folder to build: the one beside this package when it runs from a source
    tree (or an editable install), else the one of the current directory or a parent of it (a
    clone where qexport was installed with `pip install .`)."""
    here = Path(__file__).resolve().parent.parent.parent
    cwd = Path.cwd().resolve()
    for base in (here, cwd, *cwd.parents):
        cand = base / "custom_ops"
        if (cand / "CMakeLists.txt").is_file() and (cand / "toolchains").is_dir():
            return cand
    return here / "custom_ops"


def cross_compiler_hint(target: str) -> str:
    _, _, compiler, package = TARGETS[target]
    return f"the {target} C++ compiler '{compiler}' was not found: install it with `apt-get install {package}`"


def _run(cmd: list[str], log: list[str], say: Callable[[str], None]) -> None:
    log.append("+ " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log.append(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise DeployError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")


def build_ops(target: str, outdir: str | os.PathLike, *, source: str | os.PathLike | None = None,
              build_dir: str | os.PathLike | None = None, jobs: int | None = None, with_ort: bool = True,
              ort_version: str | None = None, progress: Callable[[str], None] | None = None) -> BuildResult:
    """Build libqexport_ops.so and qexport-run for ``target`` and copy them (and, with
    ``with_ort``, the target's libonnxruntime.so.1) into ``outdir``.

    Args:
        target: ``x86_64`` or ``aarch64``.
        source: the custom_ops/ folder (default: the one beside this package in a source tree).
        build_dir: CMake build folder (default: ``build/qexport-<target>`` of the source tree;
            rebuilt incrementally).
        jobs: parallel build jobs (default: CMake's).
        with_ort: also put ONNX Runtime's library for the target into ``outdir``.
    """
    say = progress or (lambda msg: None)
    if target not in TARGETS:
        raise DeployError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    _, toolchain, compiler, _ = TARGETS[target]
    src = Path(source) if source else source_dir()
    if not (src / "CMakeLists.txt").is_file():
        raise DeployError(f"{src} is not the custom_ops/ folder of a qexport source tree: build-ops compiles from "
                          "source, so run it inside a clone of the repository (or pass --source PATH/custom_ops)")
    if shutil.which("cmake") is None:
        raise DeployError("cmake was not found: install it with `apt-get install cmake` (or `pip install cmake`)")
    if shutil.which(compiler) is None:
        raise DeployError(cross_compiler_hint(target))
    if toolchain is None and os.uname().machine != target:
        raise DeployError(f"a native {target} build needs a {target} machine (this is {os.uname().machine})")
    bdir = Path(build_dir) if build_dir else src.parent / "build" / f"qexport-{target}"
    out = Path(outdir)
    log: list[str] = []
    t0 = time.perf_counter()

    configure = ["cmake", "-S", str(src), "-B", str(bdir), "-DCMAKE_BUILD_TYPE=Release", "-DQEXPORT_BUILD_RUNNER=ON"]
    if not (bdir / "CMakeCache.txt").is_file():
        configure += ["-G", "Ninja" if shutil.which("ninja") else "Unix Makefiles"]
    if toolchain:
        configure.append(f"-DCMAKE_TOOLCHAIN_FILE={(src / toolchain).resolve()}")
    say(f"configuring {target} build in {bdir}")
    _run(configure, log, say)
    build = ["cmake", "--build", str(bdir)]
    if jobs:
        build += ["--parallel", str(jobs)]
    say(f"building libqexport_ops.so and qexport-run for {target}")
    _run(build, log, say)

    built = {"ops": bdir / "libqexport_ops.so", "runner": bdir / "runner" / "qexport-run"}
    for name, path in built.items():
        if not path.is_file():
            raise DeployError(f"the build did not produce {path}")
        arch = elf_machine(path)
        if arch != target:
            raise DeployError(f"{path} is built for {arch}, not {target}: is {bdir} a stale build folder of another "
                              "target? Remove it and build again")
    out.mkdir(parents=True, exist_ok=True)
    result = BuildResult(target, out, out / "qexport-run", out / "libqexport_ops.so", None, bdir, 0.0, log)
    for name, dest in (("runner", result.runner), ("ops", result.ops)):
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copy2(built[name], tmp)
        os.replace(tmp, dest)
    if with_ort:
        lib = fetch_ort_library(target, ort_version, say=say)
        if elf_machine(lib) != target:
            raise DeployError(f"{lib} is built for {elf_machine(lib)}, not {target}")
        result.ort = out / "libonnxruntime.so.1"
        tmp = result.ort.with_name(".libonnxruntime.so.1.tmp")
        shutil.copy2(lib, tmp)
        os.replace(tmp, result.ort)
    result.seconds = time.perf_counter() - t0
    return result
