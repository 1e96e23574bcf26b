#!/usr/bin/env python
"""Two builds of the qexport op library on one model, in one process: which is faster, by how much.

Why one process: on the shared 2-core VMs these benchmarks run on, the machine's speed drifts by
up to 1.6x within minutes, and two processes timed one after the other (even alternating, 16
rounds in each order) disagreed by 7-14% when both ran the SAME library. Here both libraries are
registered in one process (a session each), runs alternate every few inferences (A, B, then B, A),
and the two sessions share ONE intra-op thread pool (``set_global_thread_pool_sizes``): with a
pool per session, the idle pool's worker spins on the second core while the other session runs.
Same library on both sides (A/A) came out within 1-2% at every percentile, 1 and 2 threads.

Before timing, the two sessions must produce the same bits on every output (the builds compute
one definition: docs/ops.md); a difference is an error, not a result.

Prints JSON (per side: p10/p25/p50 in microseconds; ratios B/A), then a one-line table.

Usage:
  python benchmarks/ab.py MODEL.onnx --lib-a old/libqexport_ops.so --lib-b new/libqexport_ops.so
         [--threads 1] [--batch 1] [--rounds 500] [--per-round 3] [--json out.json]
  (--lib-b omitted: the A/A noise of the machine for this model.)
Inputs are random: float inputs standard normal, uint8 inputs codes 0-15, 1-D float inputs 0.05
(a node's X_scale), with the first dimension set to --batch where the model leaves it free.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

PERCENTILES = (10, 25, 50)


def random_feeds(session, batch: int, seed: int = 0) -> dict:
    """Feeds for every graph input of `session` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for i, inp in enumerate(session.get_inputs()):
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        if shape and not isinstance(inp.shape[0], int):
            shape[0] = batch
        if "uint8" in inp.type:
            feeds[inp.name] = rng.integers(0, 16, shape).astype(np.uint8)
        elif len(shape) == 1:
            feeds[inp.name] = np.full(shape, 0.05, np.float32)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def first_difference(a: list, b: list, names: list[str]) -> str | None:
    """None when the two output lists are bitwise equal, else a sentence naming the first output
    that differs and how."""
    for name, x, y in zip(names, a, b):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or x.dtype != y.dtype:
            return f"output {name!r}: {x.dtype}{list(x.shape)} against {y.dtype}{list(y.shape)}"
        if x.tobytes() != y.tobytes():
            bad = int(np.count_nonzero(x.view(np.uint8).reshape(x.size, -1) != y.view(np.uint8).reshape(y.size, -1)))
            return f"output {name!r}: {bad} of {x.size} values differ"
    return None


def measure(model: str, libs: list[str], threads: int, batch: int, rounds: int, per_round: int) -> dict:
    import onnxruntime as ort
    import onnxruntime.capi._pybind_state as C

    # One pool for both sessions (must come before the first session of the process).
    C.set_global_thread_pool_sizes(threads, 1)
    sessions = []
    for lib in libs:
        opts = ort.SessionOptions()
        opts.use_per_session_threads = False
        opts.register_custom_ops_library(str(lib))
        sessions.append(ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"]))
    feeds = random_feeds(sessions[0], batch)
    names = [o.name for o in sessions[0].get_outputs()]
    outs = [s.run(None, feeds) for s in sessions]
    diff = first_difference(outs[0], outs[1], names)
    if diff is not None:
        raise SystemExit(f"ab.py: the two libraries compute different bits on {model}: {diff}")
    times: list[list[float]] = [[], []]
    for r in range(rounds):
        for k in ((0, 1) if r % 2 == 0 else (1, 0)):
            for _ in range(per_round):
                t0 = time.perf_counter()
                sessions[k].run(None, feeds)
                times[k].append((time.perf_counter() - t0) * 1e6)
    pa, pb = (np.percentile(t, PERCENTILES) for t in times)
    return {"model": model, "lib_a": str(libs[0]), "lib_b": str(libs[1]), "same_library": libs[0] == libs[1],
            "threads": threads, "batch": batch, "runs_each": len(times[0]),
            "a_us": {f"p{p}": round(float(v), 2) for p, v in zip(PERCENTILES, pa)},
            "b_us": {f"p{p}": round(float(v), 2) for p, v in zip(PERCENTILES, pb)},
            "b_over_a": {f"p{p}": round(float(y / x), 4) for p, x, y in zip(PERCENTILES, pa, pb)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--lib-a", required=True, help="path of the first libqexport_ops build")
    ap.add_argument("--lib-b", default=None, help="path of the second (default: --lib-a again, the A/A noise)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=500)
    ap.add_argument("--per-round", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    libs = [a.lib_a, a.lib_b or a.lib_a]
    for lib in libs:
        if not Path(lib).is_file():
            ap.error(f"no library file {lib!r}")
    if not Path(a.model).is_file():
        ap.error(f"no model file {a.model!r}")
    if a.threads < 1 or a.batch < 1 or a.rounds < 1 or a.per_round < 1:
        ap.error("--threads, --batch, --rounds and --per-round must be >= 1")
    res = measure(a.model, libs, a.threads, a.batch, a.rounds, a.per_round)
    text = json.dumps(res, indent=2)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")
    r = res["b_over_a"]
    print(f"\n| model | threads | batch | A p25 us | B p25 us | B/A p10 | B/A p25 | B/A p50 |\n|---|---|---|---|---|---|---|---|\n"
          f"| {Path(a.model).name} | {a.threads} | {a.batch} | {res['a_us']['p25']} | {res['b_us']['p25']} "
          f"| {r['p10']} | {r['p25']} | {r['p50']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
