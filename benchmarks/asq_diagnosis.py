#!/usr/bin/env python
"""Why ASQ gains little on the varied-brightness setting: what each ASQ quantizer's per-sample
step would have to do, against what the trained adapter does.

For trained bright ASQ checkpoints of benchmarks/ablation.py (benchmarks/results/work/<cell>.pt),
on the first 2,000 bright test images, per ASQ quantizer:
  optimal   the per-sample step with the least squared quantization error of that sample's input
            (49 ratios 0.25x..4x of the layer's step; the rule calibrate's adapter fit uses)
  input     the 99.9th percentile of |x| per sample (the input's own scale)
  learned   the trained quantizer's per-sample step (step * beta)
each as its coefficient of variation over the images and its correlation with the brightness
factor, and the correlation of learned with optimal. Prints a table and writes JSON (--json).

Usage: python benchmarks/asq_diagnosis.py bright_asq_w2_s0 bright_asq-post_w2_s0 [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qexport.checkpoint import build_model_from_checkpoint, load_checkpoint  # noqa: E402
from qexport.nn.fit import _best_sample_steps  # noqa: E402
from qexport.quant.asq import AsqActQuantizer  # noqa: E402

WORK = ROOT / "benchmarks" / "results" / "work"


def cv(v: np.ndarray) -> float:
    return float(v.std() / v.mean())


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


@torch.no_grad()
def diagnose(cell: str, x: torch.Tensor, brightness: np.ndarray) -> dict:
    model = build_model_from_checkpoint(load_checkpoint(WORK / f"{cell}.pt")).eval()
    seen: dict[str, dict[str, list]] = {}

    def hook(mod, inp, out, name):
        xin = inp[0].detach()
        seen.setdefault(name, {"x": [], "step": []})
        seen[name]["x"].append(xin)
        seen[name]["step"].append((mod.step * mod.factor(xin)).reshape(-1))

    hooks = [q.register_forward_hook(lambda m, i, o, n=name: hook(m, i, o, n))
             for name, q in model.named_modules() if isinstance(q, AsqActQuantizer)]
    for start in range(0, len(x), 250):
        model(x[start:start + 250])
    for h in hooks:
        h.remove()
    ratios = torch.exp(torch.linspace(math.log(0.25), math.log(4.0), 49))
    out = {}
    for name, v in seen.items():
        q = model.get_submodule(name)
        xin = torch.cat(v["x"])
        lo, hi = q.qrange()
        optimal = _best_sample_steps(xin, float(q.step.detach()), lo, hi, ratios).numpy()
        scale = torch.quantile(xin.reshape(len(xin), -1).abs(), 0.999, dim=1).numpy()
        learned = torch.cat(v["step"]).numpy()
        out[name.removesuffix(".act_quant")] = {
            "optimal_cv": cv(optimal), "optimal_corr_brightness": corr(optimal, brightness),
            "input_cv": cv(scale), "input_corr_brightness": corr(scale, brightness),
            "learned_cv": cv(learned), "learned_corr_brightness": corr(learned, brightness),
            "learned_corr_optimal": corr(learned, optimal)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cells", nargs="+")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--samples", type=int, default=2000)
    a = ap.parse_args(argv)
    data = np.load(WORK / "bright_fashion_mnist.npz")
    x = torch.from_numpy(data["x_test"][:a.samples])
    brightness = data["brightness_test"][:a.samples]
    result = {cell: diagnose(cell, x, brightness) for cell in a.cells}
    print("| model | quantizer | optimal step CV (r) | input scale CV (r) | learned step CV (r) | r(learned, optimal) |")
    print("|---|---|---|---|---|---|")
    for cell, rows in result.items():
        for name, r in rows.items():
            print(f"| {cell} | {name} | {r['optimal_cv']:.1%} ({r['optimal_corr_brightness']:+.2f}) | "
                  f"{r['input_cv']:.1%} ({r['input_corr_brightness']:+.2f}) | {r['learned_cv']:.1%} "
                  f"({r['learned_corr_brightness']:+.2f}) | {r['learned_corr_optimal']:+.2f} |")
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
