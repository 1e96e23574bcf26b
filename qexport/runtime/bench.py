"""Timing helpers for ``qexport bench`` and benchmarks/bench.py (docs/performance.md).

Everything here runs ONNX models in the onnxruntime wheel (no torch): several variants of one
network (ONNX Runtime float, ONNX Runtime int8 QDQ, qexport) timed in one process, interleaved,
per (batch, threads); model sizes; peak memory measured in a fresh subprocess per configuration;
per-op profiles from ONNX Runtime's profiler; multiply-accumulate counts of qexport graphs.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

__all__ = ["Variant", "Timing", "make_session", "time_variants", "peak_memory_mb", "profile_ops", "onnx_macs",
           "load_onnx", "qexport_op_count", "bench_model"]


@dataclass(frozen=True)
class Variant:
    """One ONNX file to time: ``custom`` models need the qexport custom-op library."""
    name: str
    path: Path
    custom: bool = False


@dataclass
class Timing:
    """Per-run latencies (ms) of each variant for one (batch, threads)."""
    batch: int
    threads: int
    samples: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["median_ms"] = {k: self.median(k) for k in self.samples}
        return d


def make_session(variant: Variant, threads: int):
    """An InferenceSession (CPU, ``threads`` intra-op threads, graph optimizations on: what a
    user gets, except that worker threads stop spinning when a run returns). The qexport
    library is registered only for custom models."""
    import onnxruntime as ort

    from . import session_options

    opts = session_options(threads) if variant.custom else ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # Several sessions live in one process here. ONNX Runtime's idle worker threads keep spinning
    # after a run, so with 2 threads on 2 cores the variant timed next shared its cores with the
    # previous one's spinning workers: measured, every model ran at 1-thread speed or worse.
    # This stops the spinning when a run returns (it still spins between the nodes of a run).
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(variant.path), sess_options=opts, providers=["CPUExecutionProvider"])


def time_variants(variants: Sequence[Variant], x: np.ndarray, threads: int, *, rounds: int = 20, per_round: int = 3,
                  warmup: int = 3) -> Timing:
    """Latency of each variant on the batch ``x``, interleaved in one process.

    Each round runs every variant once untimed (so that the previous variant's idle, spinning
    worker threads have settled and caches hold this variant's data) and then ``per_round`` timed
    runs; the recorded samples are all timed runs of all rounds (their median is the result).
    """
    sessions = {v.name: make_session(v, threads) for v in variants}
    feeds = {name: {s.get_inputs()[0].name: x} for name, s in sessions.items()}
    for _ in range(warmup):
        for name, s in sessions.items():
            s.run(None, feeds[name])
    timing = Timing(int(x.shape[0]), threads, {name: [] for name in sessions})
    for _ in range(rounds):
        for name, s in sessions.items():
            s.run(None, feeds[name])
            for _ in range(per_round):
                t0 = time.perf_counter()
                s.run(None, feeds[name])
                timing.samples[name].append((time.perf_counter() - t0) * 1e3)
    return timing


_MEMORY_SCRIPT = r"""
import json, sys
import numpy as np
import onnxruntime as ort
def hwm_kb():
    # VmHWM: this process image's peak resident set. (getrusage's ru_maxrss survives execve, so
    # in a child forked from a large parent it reported the parent's size for every model.)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")
path, custom, lib, threads, batch, shape = sys.argv[1], sys.argv[2] == "1", sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6])
x = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
before = hwm_kb()
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
if custom:
    opts.register_custom_ops_library(lib)
s = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
for _ in range(3):
    s.run(None, {s.get_inputs()[0].name: x})
after = hwm_kb()
print(json.dumps({"before_kb": before, "after_kb": after}))
"""


def peak_memory_mb(variant: Variant, batch: int, threads: int, input_shape: Sequence[int]) -> dict:
    """Peak resident memory of a fresh Python process that loads onnxruntime, creates the
    session and runs it 3 times (``peak_mb``), and how much of it the session added over the
    process with onnxruntime imported and the input allocated (``session_mb``): the process's
    VmHWM (Linux), so both are high-water marks."""
    from . import library_path

    lib = str(library_path()) if variant.custom else ""
    cmd = [sys.executable, "-c", _MEMORY_SCRIPT, str(variant.path), "1" if variant.custom else "0", lib, str(threads),
           str(batch), json.dumps(list(input_shape))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=dict(os.environ))
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe of {variant.path} failed: {proc.stderr.strip()[-400:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"peak_mb": r["after_kb"] / 1024, "session_mb": (r["after_kb"] - r["before_kb"]) / 1024}


def profile_ops(variant: Variant, x: np.ndarray, threads: int = 1, runs: int = 20,
                label: Callable[[dict], str] | None = None) -> dict[str, dict]:
    """Per op type: total kernel time per run (us), node count and share, from ONNX Runtime's
    profiler (``{op_type: {"us": ..., "nodes": ..., "share": ...}}``, plus ``"_run"``: the mean
    model_run duration in us, which includes the framework's own work between kernels). ``label``
    groups the nodes otherwise: it maps a profiler event (its "name" is the node's name + "_kernel_time",
    its "args" hold "op_name" and "input_type_shape") to the group's name."""
    import onnxruntime as ort

    from . import session_options

    with tempfile.TemporaryDirectory() as tmp:
        opts = session_options(threads) if variant.custom else ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "prof")
        s = ort.InferenceSession(str(variant.path), sess_options=opts, providers=["CPUExecutionProvider"])
        feed = {s.get_inputs()[0].name: x}
        for _ in range(runs):
            s.run(None, feed)
        events = json.loads(Path(s.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    nodes: dict[str, set] = defaultdict(set)
    run_us = [e["dur"] for e in events if e.get("name") == "model_run"]
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = label(e) if label is not None else e["args"]["op_name"]
            per_op[op] += e["dur"]
            nodes[op].add(e["name"])
    n = max(1, len(run_us))
    total = sum(per_op.values()) or 1.0
    out = {op: {"us": us / n, "nodes": len(nodes[op]), "share": us / total} for op, us in
           sorted(per_op.items(), key=lambda kv: -kv[1])}
    out["_run"] = {"us": statistics.mean(run_us[1:] or run_us) if run_us else float("nan")}
    return out


def _shape(vi) -> list | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def onnx_macs(path: str | os.PathLike, batch: int) -> int | None:
    """Multiply-accumulates of one run of a qexport model on a batch: the sum over its
    ai.qexport convs (plain and fused) and gemms, from the shapes of their inputs recorded in
    the graph (value_info; the batch dimension is ``batch``). None if a shape is unknown."""
    import onnx
    from onnx import helper

    from ..spec import reference as R

    model = onnx.load(str(path), load_external_data=False)
    shapes = {vi.name: _shape(vi) for vi in list(model.graph.value_info) + list(model.graph.input)}
    total = 0
    for node in model.graph.node:
        if node.domain != R.DOMAIN or not (node.op_type.endswith("Conv") or node.op_type.endswith("ConvFused")
                                           or node.op_type.endswith("Gemm")):
            continue
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        ws = list(a["weight_shape"])
        if node.op_type.endswith("Gemm"):
            total += batch * ws[0] * ws[1]
            continue
        shape = shapes.get(node.input[0])
        if shape is None or len(shape) != 4 or None in shape[2:]:
            return None
        h, w = shape[2], shape[3]
        (sh, sw), (dh, dw) = a.get("strides", [1, 1]), a.get("dilations", [1, 1])
        pt, pl, pb, pr = a.get("pads", [0, 0, 0, 0])
        oh = R.conv_output_size(h, ws[2], sh, pt, pb, dh)
        ow = R.conv_output_size(w, ws[3], sw, pl, pr, dw)
        total += batch * ws[0] * ws[1] * ws[2] * ws[3] * oh * ow
    return total


def load_onnx(path: str | os.PathLike):
    """The ONNX model in ``path`` (external data not loaded); ValueError if the file is not one."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError and friends: not an ONNX file
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"{path}: not an ONNX model ({detail}); pass an .onnx file, e.g. one written by "
                         f"`qexport convert`") from None
    if not model.graph.node or not model.graph.input:
        raise ValueError(f"{path}: not an ONNX model (no graph nodes or inputs); pass an .onnx file, e.g. one "
                         f"written by `qexport convert`")
    return model


def qexport_op_count(path: str | os.PathLike) -> int:
    """How many nodes of the model are ai.qexport ops (0: a plain ONNX model)."""
    from ..spec import reference as R

    return sum(node.domain == R.DOMAIN for node in load_onnx(path).graph.node)


def input_shape(path: str | os.PathLike) -> list[int]:
    """The per-sample shape of the model's first input (its dimensions after the batch)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    shape = _shape(model.graph.input[0])
    if shape is None or None in shape[1:]:
        raise ValueError(f"{path}: the first input has no static per-sample shape")
    return [int(d) for d in shape[1:]]


def bench_model(model: str | os.PathLike, *, float_model: str | os.PathLike | None = None,
                int8_model: str | os.PathLike | None = None, batches: Sequence[int] = (1, 32),
                threads: Sequence[int] = (1, 2), rounds: int = 20, memory: bool = True,
                progress: Callable[[str], None] | None = None) -> list[dict]:
    """Time a qexport model, and the ONNX Runtime float / int8 models of the same network when
    given, interleaved in this process, for every (batch, threads). Random inputs in [0, 1).

    Returns one record per (batch, threads): ``qexport_ms`` / ``ort_float_ms`` / ``ort_int8_ms``
    (medians), the ratios, GMAC/s and GOPS (2 ops per multiply-accumulate) of the qexport model,
    file sizes, ``qexport_ops`` (the model's ai.qexport node count; 0: a plain ONNX model) and,
    with ``memory``, peak memory per variant. A file that is not an ONNX model, or a batch size,
    thread count or round count below 1, raises ValueError.
    """
    say = progress or (lambda msg: None)
    for what, values in (("batch sizes", batches), ("thread counts", threads), ("rounds", [rounds])):
        if not values or min(values) < 1:
            raise ValueError(f"{what} must be >= 1, got {', '.join(map(str, values)) or 'none'}")
    for path in (model, float_model, int8_model):
        if path is not None:
            load_onnx(path)
    qexport_ops = qexport_op_count(model)
    variants = [Variant("qexport", Path(model), custom=True)]
    if float_model is not None:
        variants.append(Variant("ort_float", Path(float_model)))
    if int8_model is not None:
        variants.append(Variant("ort_int8", Path(int8_model)))
    shape = input_shape(model)
    rng = np.random.default_rng(0)
    records = []
    for b in batches:
        x = rng.random((b, *shape), dtype=np.float32)
        macs = onnx_macs(model, b)
        for t in threads:
            say(f"timing batch {b}, {t} thread(s)")
            timing = time_variants(variants, x, t, rounds=rounds if b < 8 else max(4, rounds // 3),
                                   per_round=3 if b < 8 else 1)
            rec = {"batch": b, "threads": t, "macs": macs, "qexport_ops": qexport_ops}
            for v in variants:
                rec[f"{v.name}_ms"] = timing.median(v.name)
                rec[f"{v.name}_bytes"] = v.path.stat().st_size
            q = rec["qexport_ms"]
            for ref in ("ort_float", "ort_int8"):
                if f"{ref}_ms" in rec:
                    rec[f"qexport_vs_{ref.split('_')[1]}"] = q / rec[f"{ref}_ms"]
            if macs:
                rec["qexport_gmacs"] = macs / (q * 1e-3) / 1e9
                rec["qexport_gops"] = 2 * rec["qexport_gmacs"]
            if memory:
                for v in variants:
                    rec[f"{v.name}_memory"] = peak_memory_mb(v, b, t, shape)
            records.append(rec)
    return records
