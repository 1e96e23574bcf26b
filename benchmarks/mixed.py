#!/usr/bin/env python
"""Mixed precision on Fashion-MNIST: accuracy against size, uniform against allocated bit-widths.

For each seed and each reference width b (--budgets-from, default 2 and 3), the shipped float
model (samples/small_cnn_float.pt) is converted post-training (calibration + the reconstruction
fit of `qexport convert`) three ways at the same size of packed weight codes:

  uniform   every body layer at b bits (first/last layer 8-bit, as always)
  layer     bit-widths per layer allocated to the uniform model's code size (--size-budget)
  channel   bit-widths per output channel allocated to the same size

plus uniform at --extra-uniform widths (default 4) for the curve. Each model is scored by its ONNX
file in ONNX Runtime with qexport's library on the full Fashion-MNIST test set (10,000 images).
The seed picks the 640 training images (512 calibrate and fit, 128 measure fidelity) and the fit's
batch order. Candidate widths: --choices (default 2,3,4: POST's range).

Outputs (under --out, default benchmarks/results/; the quantized checkpoints convert writes beside
the ONNX files, models/mixed/*.pt, are git-ignored): mixed.json (one record per model: variant, b,
seed, code_bytes, onnx_bytes, onnx_top1, bits per layer), models/mixed/<name>.onnx, mixed.png
(accuracy against code size), and the markdown section docs/results.md includes (written by
benchmarks/ablation.py --report-only, which reads mixed.json). Resumable: a record whose ONNX
file exists is kept. Usage:

  OMP_NUM_THREADS=1 python benchmarks/mixed.py                 # ~10 min on one busy core
  python benchmarks/mixed.py --seeds 0 --budgets-from 3 --limit-test 500 --out /tmp/mixed-smoke   # smoke test
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from qexport.convert import MixedOptions, convert  # noqa: E402
from qexport.data import load_dataset  # noqa: E402
from qexport.io import atomic_write_text  # noqa: E402
from qexport.nn.fit import FitOptions  # noqa: E402
from qexport.nn.mixed import Budget  # noqa: E402
from qexport.runtime import make_session  # noqa: E402

VARIANTS = ("uniform", "layer", "channel")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def onnx_top1(path: Path, x: np.ndarray, y: np.ndarray, batch: int = 500) -> float:
    session = make_session(str(path))
    name = session.get_inputs()[0].name
    correct = 0
    for start in range(0, len(x), batch):
        logits = session.run(None, {name: np.ascontiguousarray(x[start:start + batch], dtype=np.float32)})[0]
        correct += int((logits.argmax(1) == y[start:start + batch]).sum())
    return correct / len(x)


def calibration_set(seed: int) -> np.ndarray:
    x, _ = load_dataset("fashion-mnist", "train")
    idx = np.random.default_rng(10_000 + seed).choice(len(x), size=640, replace=False)
    return x[np.sort(idx)]


def run_one(args, name: str, seed: int, bits: int, mixed: MixedOptions | None, xc: np.ndarray) -> dict:
    out = Path(args.out) / "models" / "mixed" / f"{name}.onnx"
    result = convert(args.model, x=xc, output=out, method=args.method, bits=bits, validate=False,
                     fit_options=FitOptions(seed=seed), mixed=mixed)
    fid = result.fidelity
    layers = {n: v["mean_bits"] for n, v in fid.get("mixed", {}).get("layers", {}).items()}
    from qexport.checkpoint import build_model_from_checkpoint, load_checkpoint
    from qexport.nn.mixed import bits_summary, code_bytes

    model = build_model_from_checkpoint(load_checkpoint(result.checkpoint_path))
    return {"name": name, "onnx_path": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out),
            "code_bytes": code_bytes(model), "onnx_bytes": out.stat().st_size,
            "mean_bits": layers or {n: v["mean_bits"] for n, v in bits_summary(model).items()},
            "fidelity_agreement": fid.get("fitted", fid.get("calibrated", {})).get("top1_agreement")}


def run_qat(args, name: str, seed: int, bits: int, variant: str, budget_bytes: float | None) -> dict:
    """QAT from the ablation's float model with the ablation's recipe (3 epochs, lr 0.01, cosine,
    batch 128): uniform at ``bits``, or Cheng et al.'s search per ``variant`` to ``budget_bytes``."""
    from qexport.checkpoint import build_model_from_checkpoint, load_checkpoint
    from qexport.export import export_onnx
    from qexport.nn.mixed import bits_summary, code_bytes
    import torch

    from qexport.train import TrainConfig, train

    work = Path(args.out) / "work"
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / f"{name}.pt"
    search = {} if variant == "uniform" else {"size_budget": f"{budget_bytes:.0f}", "granularity": variant,
                                               "bit_choices": tuple(int(b) for b in args.choices.split(","))}
    train(TrainConfig(method=args.method, bits=bits, from_checkpoint=args.qat_from, data="fashion-mnist", epochs=3,
                      batch_size=128, lr=0.01, seed=seed, output=str(ckpt), resume=True, progress=False,
                      quant_args={"first_last_bits": 8}, **search))
    model = build_model_from_checkpoint(load_checkpoint(ckpt)).eval()
    out = Path(args.out) / "models" / "mixed" / f"{name}.onnx"
    x, _ = load_dataset("fashion-mnist", "test")
    export_onnx(model, torch.from_numpy(x[:2]), out)
    return {"name": name, "onnx_path": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out),
            "code_bytes": code_bytes(model), "onnx_bytes": out.stat().st_size,
            "mean_bits": {n: v["mean_bits"] for n, v in bits_summary(model).items()}}


def save_record(path: Path, rec: dict) -> list[dict]:
    """Add (or replace) one record in mixed.json under a lock, re-reading the file first, so that
    a post-training and a QAT run may share it; returns every record."""
    import fcntl

    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = json.loads(path.read_text()) if path.exists() else []
        records = [r for r in records if r["name"] != rec["name"]] + [rec]
        atomic_write_text(path, json.dumps(records, indent=1, sort_keys=True) + "\n")
    return records


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "samples" / "small_cnn_float.pt"))
    p.add_argument("--method", default="asq+post")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--budgets-from", default="2,3")
    p.add_argument("--extra-uniform", default="4")
    p.add_argument("--choices", default="2,3,4")
    p.add_argument("--fractions", default="0.8", help="also allocate to these fractions of each uniform size")
    p.add_argument("--limit-test", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--qat", action="store_true", help="QAT instead of post-training: uniform and searched widths "
                   "(Cheng et al.) from --qat-from with the ablation's recipe")
    p.add_argument("--qat-from", default=str(ROOT / "benchmarks" / "results" / "float_s0.pt"))
    args = p.parse_args(argv)
    out = Path(args.out)
    (out / "models" / "mixed").mkdir(parents=True, exist_ok=True)
    path = out / "mixed.json"
    records = json.loads(path.read_text()) if path.exists() else []
    done = {r["name"] for r in records if (ROOT / r["onnx_path"]).exists() or Path(r["onnx_path"]).exists()}
    xt, yt = load_dataset("fashion-mnist", "test")
    if args.limit_test:
        xt, yt = xt[:args.limit_test], yt[:args.limit_test]
    choices = tuple(int(b) for b in args.choices.split(","))
    for seed in (int(s) for s in args.seeds.split(",")):
        xc = calibration_set(seed)
        plan = [("uniform", int(b), None) for b in args.budgets_from.split(",") + args.extra_uniform.split(",") if b]
        plan += [(v, int(b), None) for b in args.budgets_from.split(",") if b for v in ("layer", "channel")]
        plan += [(v, int(b), float(f)) for f in args.fractions.split(",") if f
                 for b in args.budgets_from.split(",") if b for v in ("layer", "channel")]
        regime = "qat" if args.qat else "ptq"
        for variant, bits, frac in plan:
            name = (f"{'qat_' if args.qat else ''}{args.method.replace('+', '-')}_{variant}_at{bits}"
                    f"{f'x{frac:g}' if frac else ''}_s{seed}")
            if name in done:
                continue
            mixed, ref = None, None
            if variant != "uniform":
                ref = next(r for r in records if r["variant"] == "uniform" and r["bits"] == bits and r["seed"] == seed
                           and r.get("regime", "ptq") == regime)
                mixed = MixedOptions(Budget(code_bytes=ref["code_bytes"] * (frac or 1.0)), choices, variant)
            t0 = time.perf_counter()
            if args.qat:
                # the search budget covers the searched layers' codes plus the fixed first/last layers
                rec = run_qat(args, name, seed, bits, variant, ref["code_bytes"] * (frac or 1.0) if ref else None)
            else:
                rec = run_one(args, name, seed, bits, mixed, xc)
            rec.update(variant=variant, bits=bits, seed=seed, method=args.method, regime=regime, fraction=frac or 1.0,
                       onnx_top1=onnx_top1(ROOT / rec["onnx_path"] if not Path(rec["onnx_path"]).is_absolute()
                                           else Path(rec["onnx_path"]), xt, yt),
                       test_samples=int(len(xt)), seconds=round(time.perf_counter() - t0, 1))
            records = save_record(path, rec)
            log(f"{name}: {rec['code_bytes']:,} B of codes, ONNX {rec['onnx_bytes']:,} B, top-1 {rec['onnx_top1']:.2%} "
                f"({rec['seconds']} s)")
    print(markdown(records))
    plot(records, out / "mixed.png")
    return 0


def summary(records: list[dict]) -> list[dict]:
    """Mean over seeds per (regime, variant, bits)."""
    rows = {}
    for r in records:
        rows.setdefault((r.get("regime", "ptq"), r["variant"], r["bits"], r.get("fraction", 1.0)), []).append(r)
    out = []
    for (regime, variant, bits, frac), rs in sorted(rows.items(), key=lambda kv: (kv[0][0] == "qat", kv[0][2], -kv[0][3],
                                                                                   VARIANTS.index(kv[0][1]))):
        out.append({"regime": regime, "variant": variant, "bits": bits, "fraction": frac, "seeds": len(rs),
                    "code_bytes": float(np.mean([r["code_bytes"] for r in rs])),
                    "onnx_bytes": float(np.mean([r["onnx_bytes"] for r in rs])),
                    "top1": float(np.mean([r["onnx_top1"] for r in rs])),
                    "top1_each": [r["onnx_top1"] for r in sorted(rs, key=lambda r: r["seed"])]})
    return out


def markdown(records: list[dict]) -> str:
    """The section docs/results.md includes."""
    if not records:
        return ""
    lines = ["## Mixed precision (`--size-budget`)", "",
             "ASQ+POST models at the same size of packed weight codes: uniform body layers, and bit-widths per "
             "layer or per output channel (candidates 2/3/4-bit POST; first/last layer 8-bit). **ptq**: the "
             "shipped float model through `qexport convert --size-budget` (Fisher-weighted quantization error, "
             "greedy allocation, then calibration and the reconstruction fit; seeds: another 512-image "
             "calibration set and fit order). **qat**: `qexport train --size-budget` from the ablation's float "
             "model with its recipe (Cheng et al.'s differentiable search after calibration, then 3 epochs at "
             f"the found widths). Top-1 on the {records[0]['test_samples']:,} Fashion-MNIST test images through "
             "ONNX Runtime with the library, mean of the seeds. At the size of uniform 2-bit there is nothing to "
             "allocate: 2 bits is every format's narrowest width. Produced by `benchmarks/mixed.py` (records: "
             "benchmarks/results/mixed.json; plot: benchmarks/results/mixed.png).",
             "", "| regime | size of | variant | weight codes (bytes) | ONNX file (bytes) | top-1 (mean) | per seed |",
             "|---|---|---|---|---|---|---|"]
    for row in summary(records):
        ref = "uniform" if row["variant"] == "uniform" else ("same as" if row["fraction"] == 1.0
                                                             else f"{row['fraction']:.0%} of")
        lines.append(f"| {row['regime']} | {ref} {row['bits']}-bit | {row['variant']} | {row['code_bytes']:,.0f} "
                     f"| {row['onnx_bytes']:,.0f} | {row['top1']:.2%} | "
                     f"{' / '.join(f'{v:.2%}' for v in row['top1_each'])} |")
    lines += ["", "![accuracy against the size of the weight codes](../benchmarks/results/mixed.png)"]
    checks = check_lines(records)
    if checks:
        lines += ["", "### Checks (issue 12: per channel +0.5 points at a uniform model's size, or as accurate at "
                  "least 20% smaller; per layer at least as accurate)", ""] + checks
    return "\n".join(lines) + "\n"


def seeds(row: dict) -> str:
    return f"{row['seeds']} seed{'s' if row['seeds'] > 1 else ''}"


def check_lines(records: list[dict]) -> list[str]:
    """Per regime and uniform width with searched models: each variant against uniform at the same
    size (difference of the seed means), and each smaller budget's accuracy and size against
    uniform's. Computed from the records."""
    rows = summary(records)
    out = []
    for ref in (r for r in rows if r["variant"] == "uniform"):
        mixed = [r for r in rows if r["regime"] == ref["regime"] and r["bits"] == ref["bits"] and r["variant"] != "uniform"]
        if not mixed and ref["bits"] <= 2:
            out.append(f"* {ref['regime']}, {ref['bits']}-bit size: not reachable: {ref['bits']} bits is the narrowest "
                       "width of every weight format (no 1-bit codec), so a searched model of this size is uniform.")
        for r in mixed:
            delta = 100 * (r["top1"] - ref["top1"])
            size = r["code_bytes"] / ref["code_bytes"]
            if r["fraction"] == 1.0:
                target = 0.5 if r["variant"] == "channel" else 0.0
                verdict = "met" if delta >= target else f"not met (target {'+0.5' if target else '>= 0'})"
                out.append(f"* {ref['regime']}, {ref['bits']}-bit size, per {r['variant']}: {delta:+.2f} points "
                           f"over uniform at {size:.0%} of its code bytes ({seeds(r)}): {verdict}.")
            else:
                equal = r["top1"] >= ref["top1"]
                verdict = (f"as accurate at {1 - size:.0%} smaller: met" if equal and size <= 0.8 else
                           f"{'as accurate' if equal else 'less accurate'}, {1 - size:.0%} smaller: not met")
                out.append(f"* {ref['regime']}, {r['fraction']:.0%} of the {ref['bits']}-bit budget, per "
                           f"{r['variant']}: {100 * r['top1']:.2f}% against uniform {ref['bits']}-bit "
                           f"{100 * ref['top1']:.2f}% ({delta:+.2f}) with {size:.0%} of its code bytes "
                           f"({seeds(r)}): {verdict}.")
    return out


def plot(records: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for regime, style in (("ptq", "-"), ("qat", "--")):
        for variant, marker in zip(VARIANTS, "osD"):
            rows = [r for r in summary(records) if r["variant"] == variant and r["regime"] == regime]
            if rows:
                ax.plot([r["code_bytes"] / 1000 for r in rows], [100 * r["top1"] for r in rows], style, marker=marker,
                        label=f"{regime}: " + (variant if variant == "uniform" else f"per {variant}"))
    ax.set_xlabel("packed weight codes (kB)")
    ax.set_ylabel("Fashion-MNIST test top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    log(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
