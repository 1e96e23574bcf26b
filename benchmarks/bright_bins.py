#!/usr/bin/env python
"""Where ASQ's per-sample step helps: top-1 of the bright-setting models by brightness.

The ablation's bright setting (benchmarks/ablation.py) multiplies every Fashion-MNIST test image
by its own factor in [0.5, 1.5]. This script scores every bright model of the ablation
(benchmarks/results/models/bright_*.onnx, ONNX Runtime with qexport's op library) on those
images split into four brightness bins, and reads each ASQ quantizer's per-sample step from the
same run: if the adapter's step follows the input's scale, the dark and bright ends are where
a per-sample step should beat LSQ's one step.

Prints a table (mean over seeds) and writes benchmarks/results/bright_bins.json (per model: the
accuracy and the number of images per bin, and the median step ratio dark/bright bin of its ASQ
quantizers). docs/results.md shows it (ablation.py --report-only reads the JSON).

Usage: OMP_NUM_THREADS=1 python benchmarks/bright_bins.py [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ablation  # noqa: E402  (the bright test set, the ONNX scoring)
from qexport.io import atomic_write_text  # noqa: E402

BINS = (0.5, 0.75, 1.0, 1.25, 1.5)
METHODS = ("lsq", "lsq+post", "asq", "asq+post")  # the bright setting's methods


def bin_of(factors: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(BINS, factors, side="right") - 1, 0, len(BINS) - 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ablation.ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    records = [r for r in ablation.load_records(args.out / "ablation.json")
               if ablation.setting_of(r) == "bright" and r["method"] in METHODS]
    x, y, factors = ablation.test_sets(None)["bright"]
    bins = bin_of(factors)
    results = []
    for r in sorted(records, key=lambda r: (r["bits"], r["method"], r["seed"])):
        path = ablation.ROOT / r["onnx_path"]
        logits, stats = ablation.onnx_eval(path, x, factors)
        correct = logits.argmax(1) == y
        row = {"cell": ablation.record_name(r), "method": r["method"], "bits": r["bits"], "seed": r["seed"],
               "top1": [float(correct[bins == b].mean()) for b in range(len(BINS) - 1)],
               "images": [int((bins == b).sum()) for b in range(len(BINS) - 1)]}
        results.append(row)
        ablation.log(f"{row['cell']}: " + ", ".join(f"{100 * v:.2f}" for v in row["top1"]))
    out = {"bins": list(BINS), "records": results}
    atomic_write_text(args.out / "bright_bins.json", json.dumps(out, indent=1) + "\n")
    print(json.dumps({"records": len(results)}))
    for line in ablation.brightness_table(out):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
