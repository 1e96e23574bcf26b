"""``python -m qexport.train``: run :func:`qexport.train.train` from the shell (argparse, no typer).

Example:
    python -m qexport.train --method asq+post --bits 4 --epochs 3 \\
        --from-checkpoint samples/small_cnn_float.pt --output runs/small_cnn_asq_post4.pt
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .config import METHODS, TrainConfig
from .loop import train


def _json_dict(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"width\": 16}'")
    return value


def main(argv: list[str] | None = None) -> dict:
    d = TrainConfig()
    ap = argparse.ArgumentParser(prog="python -m qexport.train", description="Float training or QAT of a zoo model.")
    ap.add_argument("--arch", default=None, help="model name (default: the checkpoint's, else small_cnn)")
    ap.add_argument("--arch-args", type=_json_dict, default={}, help="JSON object of model arguments")
    ap.add_argument("--method", default=d.method, choices=METHODS)
    ap.add_argument("--bits", type=int, default=d.bits)
    ap.add_argument("--quant-args", type=_json_dict, default={}, help="JSON object of further QuantConfig fields")
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=None, help="default 0.1, or 0.01 with --from-checkpoint")
    ap.add_argument("--momentum", type=float, default=d.momentum)
    ap.add_argument("--weight-decay", type=float, default=d.weight_decay)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--data", default=d.data, help="fashion-mnist | samples | digits | path.npz")
    ap.add_argument("--from-checkpoint", default=None)
    ap.add_argument("--output", "-o", default=None)
    ap.add_argument("--calib-batches", type=int, default=d.calib_batches)
    ap.add_argument("--calib-refine-samples", type=int, default=d.calib_refine_samples)
    ap.add_argument("--schedule", default=d.schedule, choices=("cosine", "linear", "constant"))
    ap.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    ap.add_argument("--test-data", default=None)
    ap.add_argument("--resume", action="store_true", help="continue the unfinished run at --output")
    ap.add_argument("--no-keep-best", action="store_true")
    ap.add_argument("--distill", action="store_true", help="distil from the --from-checkpoint float model")
    ap.add_argument("--teacher", default=None)
    ap.add_argument("--distill-weight", type=float, default=d.distill_weight)
    ap.add_argument("--distill-temperature", type=float, default=d.distill_temperature)
    ap.add_argument("--augment", action="store_true")
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--limit-test", type=int, default=None)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--metrics-json", type=Path, default=None, help="also write the metrics here (every epoch)")
    a = ap.parse_args(argv)
    config = TrainConfig(arch=a.arch, arch_args=a.arch_args, method=a.method, bits=a.bits, quant_args=a.quant_args,
                         epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, schedule=a.schedule,
                         warmup_epochs=a.warmup_epochs, momentum=a.momentum, weight_decay=a.weight_decay, seed=a.seed,
                         data=a.data, test_data=a.test_data, from_checkpoint=a.from_checkpoint, output=a.output,
                         resume=a.resume, keep_best=not a.no_keep_best,
                         metrics_json=str(a.metrics_json) if a.metrics_json else None,
                         calib_batches=a.calib_batches, calib_refine_samples=a.calib_refine_samples,
                         distill=a.distill, teacher=a.teacher, distill_weight=a.distill_weight,
                         distill_temperature=a.distill_temperature, augment=a.augment,
                         limit_train=a.limit_train, limit_test=a.limit_test, progress=not a.no_progress)
    metrics = train(config)
    summary = {k: metrics[k] for k in ("init_float_test_acc", "calibrated_test_acc", "best_test_acc",
                                       "final_test_acc", "wall_time_s")}
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    return metrics


if __name__ == "__main__":
    main()
