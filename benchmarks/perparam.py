#!/usr/bin/env python
"""Per-parameter precision (Khoram and Li) on Fashion-MNIST: compression of the whole ONNX file
against accuracy, beside the uniform and mixed-precision models.

For each format (--formats: perparam = fixed point, widest 8 bits; perparam_post = powers of
sqrt 2, widest 4 bits) and seed, the ablation's float model (benchmarks/results/float_s0.pt,
small_cnn) is trained with `qexport train --method lsq+<format>`: calibration, then the margin
rounds (each: sensitivities, closed-form margins, widths, --steps of retraining; kept while the
accuracy on 5,000 held-out training images stays within --tolerance points of the float model's),
then --epochs at the widths found. Every layer, first and last included, has per-parameter
widths; activations are --act-bits (8 for the first layer's input and the classifier's).

Each model is exported and scored by its ONNX file in ONNX Runtime with qexport's library on the
full test set (10,000 images). The compression ratio is whole files: the float model's ONNX file
(models/float_s0.onnx) over the qexport file. Per layer the record keeps the bits-per-parameter
histogram and three sizes of its weights (the entropy-coded stream in the file, the fixed-width
stream at the widest width, "widths then codes" at its entropy bound): docs/ops.md's choice of
format, measured.

Outputs (under --out, default benchmarks/results/): perparam.json, models/perparam/<name>.onnx,
perparam.png (top-1 against compression for these and for the ablation's uniform and
benchmarks/mixed.py's models), and the section of docs/results.md (written by
benchmarks/ablation.py --report-only, which reads perparam.json). Resumable: a record whose ONNX
file exists is kept. Usage:

  OMP_NUM_THREADS=1 python benchmarks/perparam.py                  # ~30-40 min per model on one busy core
  python benchmarks/perparam.py --formats perparam --rounds 2 --steps 20 --epochs 0 \\
      --limit-train 4000 --limit-test 500 --out /tmp/pp-smoke       # smoke test
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qexport.data import load_dataset  # noqa: E402
from qexport.io import atomic_write_text  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from mixed import log, onnx_top1  # noqa: E402  (one definition of the scoring and the log line)

FLOAT_CKPT = ROOT / "benchmarks/results/float_s0.pt"
FLOAT_ONNX = ROOT / "benchmarks/results/models/float_s0.onnx"
TOP = {"perparam": 8, "perparam_post": 4}


def run_one(args, fmt: str, seed: int, out: Path) -> dict:
    import torch

    from qexport.checkpoint import build_model_from_checkpoint, load_checkpoint
    from qexport.export import export_onnx
    from qexport.nn.perparam import layer_stats, totals
    from qexport.train import TrainConfig, train

    torch.set_num_threads(1)
    name = f"lsq-{fmt}{args.tag}_s{seed}"
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / f"perparam_{name}.pt"
    t0 = time.perf_counter()
    log(f"{name}: train --method lsq+{fmt} --bits {TOP[fmt]} (rounds {args.rounds} x {args.steps} steps, "
        f"tolerance {args.tolerance}, then {args.epochs} epochs)")
    edges = {"act_bits": 8}
    metrics = train(TrainConfig(
        method=f"lsq+{fmt}", bits=TOP[fmt], from_checkpoint=str(FLOAT_CKPT), epochs=args.epochs, seed=seed,
        quant_args={"act_bits": args.act_bits, "first_last_bits": None,
                    "overrides": [["features.0.0", edges], ["fc", edges]]},
        output=str(ckpt), resume=True, progress=args.progress, limit_train=args.limit_train,
        limit_test=args.limit_test, perparam_rounds=args.rounds, perparam_steps=args.steps,
        perparam_tolerance=args.tolerance, perparam_growth=args.growth))
    model = build_model_from_checkpoint(load_checkpoint(ckpt)).eval()
    xte, yte = load_dataset("fashion-mnist", "test")
    if args.limit_test:
        xte, yte = xte[:args.limit_test], yte[:args.limit_test]
    path = out / "models" / "perparam" / f"{name}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, torch.from_numpy(xte[:2]), path)
    top1 = onnx_top1(path, xte, yte)
    layers = layer_stats(model)
    pp = metrics["perparam"]
    rec = {"name": name, "format": fmt, "steps": args.steps, "growth": args.growth, "rounds_max": args.rounds, "tolerance": args.tolerance, "top_bits": TOP[fmt], "act_bits": args.act_bits, "seed": seed,
           "onnx_path": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
           "onnx_bytes": path.stat().st_size, "float_onnx_bytes": FLOAT_ONNX.stat().st_size,
           "onnx_top1": top1, "test_samples": int(len(xte)),
           "ratio": FLOAT_ONNX.stat().st_size / path.stat().st_size,
           **totals(layers),
           "layers": layers, "rounds": pp["rounds"], "reference_val_acc": pp["reference_acc"],
           "rounds_val_acc": pp["val_acc"], "final_torch_top1": metrics["final_test_acc"],
           "seconds": round(time.perf_counter() - t0, 1)}
    log(f"{name}: onnx top-1 {100 * top1:.2f}%, {rec['onnx_bytes']:,} bytes = {rec['ratio']:.1f}x smaller than float "
        f"({rec['mean_bits']:.2f} bits/weight, {100 * rec['pruned']:.1f}% pruned, codes {rec['stream_bytes']:,} B), "
        f"{rec['seconds']:.0f} s")
    return rec


def plot(records: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    float_bytes = FLOAT_ONNX.stat().st_size
    ablation = out / "ablation.json"
    if ablation.exists():
        recs = [r for r in json.loads(ablation.read_text())["records"] if r.get("setting", "plain") == "plain"]
        fl = [r for r in recs if r["method"] == "float"]
        if fl:
            ax.axhline(fl[0]["onnx_top1"], color="gray", ls="--", lw=1, label=f"float ({fl[0]['onnx_top1']:.2f}%)")
            ax.axhline(fl[0]["onnx_top1"] - 1.0, color="gray", ls=":", lw=1, label="float - 1 point")
        for method, marker in (("lsq", "o"), ("asq+post", "s")):
            pts = [(float_bytes / r["onnx_bytes"], r["onnx_top1"], r["bits"]) for r in recs
                   if r["method"] == method and r.get("onnx_bytes")]
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, alpha=0.6,
                           label=f"uniform {method} 2/3/4-bit (QAT)")
    mixed = out / "mixed.json"
    if mixed.exists():
        pts = [(float_bytes / r["onnx_bytes"], 100 * r["onnx_top1"]) for r in json.loads(mixed.read_text())
               if r.get("regime") == "qat"]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker="^", label="mixed per layer/channel (QAT)")
    for fmt, marker in (("perparam", "*"), ("perparam_post", "P")):
        pts = [(r["ratio"], 100 * r["onnx_top1"]) for r in records if r["format"] == fmt]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, s=120, label=f"per-parameter ({fmt})")
    ax.axvline(20, color="green", ls=":", lw=1)
    ax.set_xscale("log")
    ticks = [4, 6, 8, 10, 15, 20, 30]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t}x" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("compression: float ONNX file / qexport ONNX file (whole files)")
    ax.set_ylabel("top-1 (%), ONNX Runtime, 10,000 test images")
    ax.set_title("Fashion-MNIST small_cnn: accuracy against file size")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "perparam.png", dpi=110)
    plt.close(fig)


def markdown(records: list[dict]) -> str:
    """The section of docs/results.md (benchmarks/ablation.py --report-only includes it)."""
    lines = ["## Per-parameter precision (Khoram and Li)", "",
             "Produced by `benchmarks/perparam.py` (`qexport train --method lsq+perparam` from the ablation's float "
             "model: margin rounds, then fine-tuning at the widths found; every layer per-parameter). Scored by the "
             "ONNX files in ONNX Runtime with qexport's library on the 10,000 test images; compression = the float "
             "model's ONNX file / the qexport file, whole files (graph, scales, biases included).", "",
             "![accuracy against compression](../benchmarks/results/perparam.png)", "",
             "| model | settings | top-1 | file bytes | compression | bits/weight | pruned | codes (rANS) | fixed-width | widths+codes |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["format"], r["seed"])):
        settings = (f"{r['act_bits']}-bit acts, tolerance {r.get('tolerance', 0.5)}, {r.get('steps', 200)} steps/round, "
                    f"eps x{r.get('growth', 4.0):g}")
        lines.append(f"| {r['name']} | {settings} | {100 * r['onnx_top1']:.2f}% | {r['onnx_bytes']:,} | {r['ratio']:.1f}x | "
                     f"{r['mean_bits']:.2f} | {100 * r['pruned']:.1f}% | {r['stream_bytes']:,} | "
                     f"{r['fixed_width_bytes']:,} | {r['widths_then_codes_bytes']:,} |")
    lines += ["", "Bits per parameter, per layer (share of the layer's weights at each width; 0 = pruned):", ""]
    for r in sorted(records, key=lambda r: (r["format"], r["seed"])):
        lines.append(f"- {r['name']}: " + "; ".join(
            f"{n} {s['mean_bits']:.2f} (" + ", ".join(f"{b}b {100 * c / s['weights']:.0f}%"
                                                     for b, c in sorted(s["bits_histogram"].items(), key=lambda kv: int(kv[0]))) + ")"
            for n, s in r["layers"].items()))
    lines += ["", "Rounds (eps, bits/weight, held-out accuracy, kept):", ""]
    for r in sorted(records, key=lambda r: (r["format"], r["seed"])):
        lines.append(f"- {r['name']} (reference {r['reference_val_acc']:.2f}%): " + ", ".join(
            f"{x['eps']:.3g}: {x['mean_bits']:.2f} b, {x['val_acc']:.2f}%{'' if x['accepted'] else ' (undone)'}"
            for x in r["rounds"]))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--formats", default="perparam,perparam_post")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--tolerance", type=float, default=0.5)
    ap.add_argument("--growth", type=float, default=4.0, help="eps factor per kept round")
    ap.add_argument("--act-bits", type=int, default=4)
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--limit-test", type=int, default=None)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--tag", default="", help="appended to the model names (e.g. -r600 for a variant's settings)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    store = out / "perparam.json"
    records = json.loads(store.read_text()) if store.exists() else []
    for fmt in [f.strip() for f in args.formats.split(",") if f.strip()]:
        if fmt not in TOP:
            ap.error(f"unknown format {fmt!r}: choose from {sorted(TOP)}")
        for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
            name = f"lsq-{fmt}{args.tag}_s{seed}"
            done = [r for r in records if r["name"] == name and (ROOT / r["onnx_path"]).exists()]
            if done:
                log(f"{name}: done, skipped")
                continue
            records = [r for r in records if r["name"] != name] + [run_one(args, fmt, seed, out)]
            atomic_write_text(store, json.dumps(records, indent=1) + "\n")
    plot(records, out)
    print(markdown(records))


if __name__ == "__main__":
    main()
