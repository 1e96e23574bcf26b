#!/usr/bin/env python
"""Rebuild the shipped samples (reproducible: everything is seeded).

Writes, next to this script:
  fashion_mnist_512.npz   512 Fashion-MNIST *test* images, stratified over the 10 classes
                          (52 of classes 0-1, 51 of the others), in test-set order:
                          x float32 (512, 1, 28, 28) in [0, 1], y int64, index int64 (test-set row).
  small_cnn_float.pt      the float small_cnn trained on the 60,000 training images
                          (a qexport checkpoint, quant=None, metrics incl. test top-1).

Usage (from anywhere; needs `apt-get install dataset-fashion-mnist`):
  python samples/make_samples.py [--epochs 4] [--width 32] [--batch-size 64] [--seed 0] [--skip-train]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from qexport.data import SAMPLES_FILE, load_fashion_mnist  # noqa: E402
from qexport.train import TrainConfig, train  # noqa: E402

N_SAMPLES = 512
MODEL_FILE = "small_cnn_float.pt"


def stratified_indices(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices, as even over the classes as possible (lower classes take the remainder), sorted."""
    classes = np.unique(y)
    per, extra = divmod(n, len(classes))
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(y == c), per + (i < extra), replace=False) for i, c in enumerate(classes)]
    return np.sort(np.concatenate(picks))


def make_npz(seed: int) -> Path:
    x, y = load_fashion_mnist("test")
    idx = stratified_indices(y, N_SAMPLES, seed)
    out = HERE / SAMPLES_FILE
    np.savez_compressed(out, x=x[idx].astype(np.float32), y=y[idx].astype(np.int64), index=idx.astype(np.int64))
    print(f"wrote {out.relative_to(ROOT)}: {len(idx)} images, per class {np.bincount(y[idx]).tolist()}, "
          f"{out.stat().st_size / 1024:.0f} KiB")
    return out


def make_model(epochs: int, width: int, seed: int, batch_size: int) -> Path:
    os.chdir(ROOT)  # the config stored in the checkpoint then records a relative output path
    out = Path("samples") / MODEL_FILE
    config = TrainConfig(arch="small_cnn", arch_args={"width": width}, method="float", epochs=epochs, seed=seed,
                         batch_size=batch_size,
                         output=str(out))
    t0 = time.perf_counter()
    metrics = train(config)
    minutes = (time.perf_counter() - t0) / 60
    print(f"wrote {out}: test top-1 {metrics['final_test_acc']:.2f}% (best {metrics['best_test_acc']:.2f}%), "
          f"{epochs} epochs in {minutes:.1f} min, {out.stat().st_size / 1024:.0f} KiB")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--skip-train", action="store_true", help="only rewrite the .npz")
    ap.add_argument("--skip-npz", action="store_true", help="only retrain the model")
    args = ap.parse_args()
    if not args.skip_npz:
        make_npz(args.seed)
    if not args.skip_train:
        make_model(args.epochs, args.width, args.seed, args.batch_size)


if __name__ == "__main__":
    main()
