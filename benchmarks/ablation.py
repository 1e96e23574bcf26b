#!/usr/bin/env python
"""The ASQ/POST paper's ablation (its Table 5) on Fashion-MNIST, scored by the exported ONNX models.

Trains the float small CNN, then, starting from it, quantization-aware training of every
(method, bits, seed) cell: LSQ (baseline), LSQ+POT, LSQ+POST, ASQ, ASQ+POST at 2, 3 and 4 bits
(first and last layers 8-bit uniform, as in the paper). Each QAT checkpoint is exported to ONNX
(ai.qexport custom ops) and its test accuracy measured by ONNX Runtime with qexport's op library,
beside the PyTorch model's.

Outputs (under --out, default benchmarks/results/):
  float_s0.pt              the float model every QAT cell starts from (a qexport checkpoint)
  ablation.json            one record per cell: dataset, arch, method, bits, seed, float_top1,
                           torch_top1, onnx_top1, onnx_bytes, onnx_path, and details
  models/<cell>.onnx       the exported models (input: float32 (N, 1, 28, 28) pixels in [0, 1];
                           output: logits for the 10 classes)
  work/                    training checkpoints and per-cell metrics (not needed to re-score)
and the markdown report docs/results.md (--report-md).

Resumable cell by cell: a cell with a record in ablation.json and its ONNX file is skipped; a cell
interrupted mid-training continues from its last complete epoch (``qexport train --resume``).
Every write is atomic. Rerun the same command to continue.

Usage:
  nice -n 19 python benchmarks/ablation.py                      # the full table (~3 h on 2 cores)
  python benchmarks/ablation.py --report-only                   # rewrite docs/results.md from the JSON
  python benchmarks/ablation.py --limit-train 512 --limit-test 500 --epochs 1 --float-epochs 1 \\
      --out /tmp/ablation-tiny --report-md /tmp/ablation-tiny/results.md     # a smoke test
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import torch  # noqa: E402

from qexport.checkpoint import build_model_from_checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from qexport.data import load_dataset  # noqa: E402
from qexport.export import export_onnx  # noqa: E402
from qexport.io import atomic_write_bytes, atomic_write_text  # noqa: E402
from qexport.runtime import make_session  # noqa: E402
from qexport.train import TrainConfig, evaluate, train  # noqa: E402

METHODS = ("lsq", "lsq+pot", "lsq+post", "asq", "asq+post")
LABELS = {"float": "float (FP32)", "lsq": "LSQ (baseline)", "lsq+pot": "LSQ + POT (weights)",
          "lsq+post": "LSQ + POST (weights)", "asq": "ASQ (activations)", "asq+post": "ASQ + POST"}
EVAL_BATCH = 500


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cell_name(method: str, bits: int | None, seed: int) -> str:
    return "float" + f"_s{seed}" if method == "float" else f"{method.replace('+', '-')}_w{bits}_s{seed}"


def load_records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return json.loads(path.read_text())["records"]


def save_records(path: Path, records: list[dict], settings: dict) -> None:
    order = {m: i for i, m in enumerate(("float",) + METHODS)}
    records = sorted(records, key=lambda r: (order.get(r["method"], 99), -(r["bits"] or 32), r["seed"]))
    atomic_write_text(path, json.dumps({"settings": settings, "records": records}, indent=2) + "\n")


def onnx_top1(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    sess = make_session(str(path))
    name = sess.get_inputs()[0].name
    preds = []
    for i in range(0, len(x), EVAL_BATCH):
        preds.append(sess.run(None, {name: np.ascontiguousarray(x[i:i + EVAL_BATCH])})[0].argmax(1))
    pred = np.concatenate(preds)
    return 100.0 * float((pred == y).mean()), pred


@torch.no_grad()
def torch_predictions(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    return np.concatenate([model(torch.from_numpy(np.ascontiguousarray(x[i:i + EVAL_BATCH]))).argmax(1).numpy()
                           for i in range(0, len(x), EVAL_BATCH)])


def export_float(model: torch.nn.Module, path: Path) -> None:
    """The float model with standard ONNX ops (the exporter's ai.qexport path is for quantized models)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model.eval(), (torch.rand(2, 1, 28, 28),), dynamo=True, verbose=False,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                                    input_names=["input"], output_names=["output"])
    atomic_write_bytes(path, program.model_proto.SerializeToString(deterministic=True))


def score(ckpt_path: Path, onnx_path: Path, x: np.ndarray, y: np.ndarray, quantized: bool) -> dict:
    ckpt = load_checkpoint(ckpt_path)
    model = build_model_from_checkpoint(ckpt)
    if quantized:
        export_onnx(model, torch.from_numpy(x[:2]), onnx_path,
                    meta={"qexport.ablation": onnx_path.stem, "qexport.method": ckpt["quant"]["method"]})
    else:
        export_float(model, onnx_path)
    t_pred = torch_predictions(model, x)
    o_top1, o_pred = onnx_top1(onnx_path, x, y)
    return {"torch_top1": 100.0 * float((t_pred == y).mean()), "onnx_top1": o_top1,
            "onnx_torch_agreement": float((t_pred == o_pred).mean()), "onnx_bytes": onnx_path.stat().st_size,
            "metrics": ckpt["metrics"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--report-md", type=Path, default=ROOT / "docs" / "results.md")
    ap.add_argument("--bits", default="4,3,2", help="comma-separated bit-widths (run in this order)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1", help="QAT seeds at 3 and 4 bits")
    ap.add_argument("--seeds-2bit", default="0", help="QAT seeds at 2 bits")
    ap.add_argument("--epochs", type=int, default=3, help="QAT epochs per cell")
    ap.add_argument("--lr", type=float, default=0.01, help="QAT peak learning rate (cosine)")
    ap.add_argument("--batch-size", type=int, default=128, help="QAT batch size")
    ap.add_argument("--float-epochs", type=int, default=8)
    ap.add_argument("--float-lr", type=float, default=0.1)
    ap.add_argument("--float-batch-size", type=int, default=64)
    ap.add_argument("--float-seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=32, help="small_cnn width")
    ap.add_argument("--rescore", action="store_true",
                    help="first re-score every finished cell's ONNX file with the installed op library "
                         "(onnx_top1; and the agreement with PyTorch where the cell's checkpoint is in work/)")
    ap.add_argument("--distill", action="store_true", help="QAT with distillation from the float model")
    ap.add_argument("--limit-train", type=int, default=None, help="smoke tests only")
    ap.add_argument("--limit-test", type=int, default=None, help="smoke tests only")
    ap.add_argument("--report-only", action="store_true", help="only rewrite the markdown report from the JSON")
    ap.add_argument("--max-cells", type=int, default=None, help="stop after this many new cells")
    a = ap.parse_args(argv)

    out = a.out.resolve()
    models_dir, work = out / "models", out / "work"
    json_path = out / "ablation.json"
    bits_list = [int(b) for b in a.bits.split(",") if b]
    methods = [m for m in a.methods.split(",") if m]
    seeds = [int(s) for s in a.seeds.split(",") if s]
    seeds2 = [int(s) for s in a.seeds_2bit.split(",") if s]
    settings = {
        "dataset": "fashion-mnist", "arch": "small_cnn", "arch_args": {"width": a.width},
        "float": {"epochs": a.float_epochs, "lr": a.float_lr, "batch_size": a.float_batch_size, "seed": a.float_seed,
                  "schedule": "cosine", "momentum": 0.9, "weight_decay": 1e-4},
        "qat": {"epochs": a.epochs, "lr": a.lr, "batch_size": a.batch_size, "schedule": "cosine", "momentum": 0.9,
                "weight_decay": 1e-4, "weight_decay_on_steps": False, "first_last_bits": 8, "calib_batches": 8,
                "calib_refine_samples": 128, "distill": a.distill},
        "seeds": {"3-4 bits": seeds, "2 bits": seeds2},
        "limit_train": a.limit_train, "limit_test": a.limit_test,
        "command": "python benchmarks/ablation.py " + " ".join(
            shlex.quote(s) for s in (argv if argv is not None else sys.argv[1:]) if s not in ("--rescore", "--report-only")),
        "torch_version": str(torch.__version__),
    }
    cells = [("float", None, a.float_seed)]
    for bits in bits_list:
        for seed in (seeds2 if bits == 2 else seeds):
            cells += [(m, bits, seed) for m in methods]
    # Seed-major at 4 and 3 bits, so that an interrupted run has one complete seed first.
    cells = [cells[0]] + sorted(cells[1:], key=lambda c: (c[1] == 2, c[2], bits_list.index(c[1]), methods.index(c[0])))

    if a.report_only:
        if json_path.is_file():  # the settings of the run that wrote the records
            settings = json.loads(json_path.read_text()).get("settings", settings)
        else:
            settings["command"] = settings["command"].replace(" --report-only", "")
        write_report(a.report_md, load_records(json_path), settings, cells, out)
        return 0

    xte, yte = load_dataset("fashion-mnist", "test")
    if a.limit_test:
        xte, yte = xte[: a.limit_test], yte[: a.limit_test]
    records = load_records(json_path)
    done = {(r["method"], r["bits"], r["seed"]) for r in records if (ROOT / r["onnx_path"]).is_file()
            or Path(r["onnx_path"]).is_file()}
    if a.rescore:
        for r in records:
            path = ROOT / r["onnx_path"] if (ROOT / r["onnx_path"]).is_file() else Path(r["onnx_path"])
            if not path.is_file():
                continue
            top1, pred = onnx_top1(path, xte, yte)
            name = cell_name(r["method"], r["bits"] if r["method"] != "float" else None, r["seed"])
            ckpt_path = work / f"{name}.pt"
            if r["method"] != "float" and ckpt_path.is_file():
                t_pred = torch_predictions(build_model_from_checkpoint(load_checkpoint(ckpt_path)), xte)
                r["onnx_torch_agreement"] = float((t_pred == pred).mean())
            log(f"{name}: re-scored onnx {r['onnx_top1']:.2f}% -> {top1:.2f}%")
            r["onnx_top1"] = top1
        for r in records:
            if r["method"] != "float":
                r["float_onnx_top1"] = next((f["onnx_top1"] for f in records if f["method"] == "float"), None)
        save_records(json_path, records, settings)
    float_ckpt = work / f"float_s{a.float_seed}.pt"  # the float run's checkpoint (with its training state)
    float_model = out / f"float_s{a.float_seed}.pt"  # a model-only copy, kept with the results: QAT starts here
    if not float_model.is_file():
        done.discard(("float", 32, a.float_seed))
    new_cells = 0
    t_all = time.perf_counter()
    for method, bits, seed in cells:
        key = (method, bits if method != "float" else 32, seed)
        name = cell_name(method, bits, seed)
        if key in done:
            log(f"{name}: done, skipped")
            continue
        if a.max_cells is not None and new_cells >= a.max_cells:
            break
        t0 = time.perf_counter()
        common = dict(data="fashion-mnist", progress=False, resume=True, limit_train=a.limit_train,
                      limit_test=a.limit_test, metrics_json=str(work / f"{name}.metrics.json"))
        if method == "float":
            log(f"{name}: training the float model ({a.float_epochs} epochs)")
            train(TrainConfig(arch="small_cnn", arch_args={"width": a.width}, method="float", epochs=a.float_epochs,
                              lr=a.float_lr, batch_size=a.float_batch_size, seed=seed, output=str(float_ckpt),
                              keep_best=False, **common))
            ckpt = float_ckpt
            c = load_checkpoint(float_ckpt)
            save_checkpoint(float_model, model=build_model_from_checkpoint(c), arch=c["arch"],
                            arch_args=c["arch_args"], metrics=c["metrics"])
        else:
            if not float_model.is_file():
                raise SystemExit(f"{float_model} missing: the float cell must run first")
            log(f"{name}: QAT {method} {bits}-bit, seed {seed}, {a.epochs} epochs")
            ckpt = work / f"{name}.pt"
            train(TrainConfig(method=method, bits=bits, epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, seed=seed,
                              from_checkpoint=str(float_model), output=str(ckpt), keep_best=False,
                              distill=a.distill, quant_args={"first_last_bits": 8}, **common))
        onnx_path = models_dir / f"{name}.onnx"
        s = score(ckpt, onnx_path, xte, yte, quantized=method != "float")
        m = s.pop("metrics")
        float_top1 = next((r["onnx_top1"] for r in records if r["method"] == "float"), None) if method != "float" else None
        rec = {"dataset": "fashion-mnist", "arch": "small_cnn", "method": method, "bits": bits if bits else 32,
               "seed": seed, "float_top1": m.get("init_float_test_acc") if method != "float" else s["torch_top1"],
               "torch_top1": s["torch_top1"], "onnx_top1": s["onnx_top1"], "onnx_bytes": s["onnx_bytes"],
               "onnx_path": str(onnx_path.relative_to(ROOT)) if onnx_path.is_relative_to(ROOT) else str(onnx_path),
               "onnx_torch_agreement": s["onnx_torch_agreement"], "float_onnx_top1": float_top1,
               "calibrated_top1": m.get("calibrated_test_acc"), "epochs": len(m.get("epochs", [])),
               "train_loss": (m["epochs"][-1]["train_loss"] if m.get("epochs") else None),
               "test_samples": int(len(yte)), "train_samples": m.get("data", {}).get("train_samples"),
               "train_time_s": sum(e.get("train_time_s", 0.0) for e in m.get("epochs", [])),
               "cell_time_s": time.perf_counter() - t0}
        records = [r for r in records if (r["method"], r["bits"], r["seed"]) != key] + [rec]
        save_records(json_path, records, settings)
        write_report(a.report_md, records, settings, cells, out)
        new_cells += 1
        log(f"{name}: torch {rec['torch_top1']:.2f}%, onnx {rec['onnx_top1']:.2f}% "
            f"(agreement {rec['onnx_torch_agreement']:.4f}), {rec['onnx_bytes'] / 1024:.0f} KiB, "
            f"{rec['cell_time_s']:.0f} s")
    write_report(a.report_md, records, settings, cells, out)
    log(f"finished {new_cells} new cells in {(time.perf_counter() - t_all) / 60:.1f} min")
    return 0


# --------------------------------------------------------------------------- report
def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def write_report(path: Path, records: list[dict], settings: dict, cells: list, out: Path) -> None:
    by = {}
    for r in records:
        by.setdefault((r["method"], r["bits"]), []).append(r)
    float_recs = by.get(("float", 32), [])
    float_top1 = _mean([r["onnx_top1"] for r in float_recs])
    bits_cols = sorted({c[1] for c in cells if c[1]}, reverse=False)
    methods = [m for m in METHODS if any(c[0] == m for c in cells)]
    have = {(r["method"], r["bits"], r["seed"]) for r in records}
    missing = [c for c in cells if (c[0], c[1] or 32, c[2]) not in have]
    q = settings["qat"]
    f = settings["float"]

    def cell(method: str, bits: int, key: str) -> str:
        rs = by.get((method, bits), [])
        if not rs:
            return "—"
        vals = [r[key] for r in rs]
        text = f"{_mean(vals):.2f}"
        if len(vals) > 1:
            text += f" ±{(max(vals) - min(vals)) / 2:.2f}"
        return text

    lines = [
        "# Results: the ASQ/POST ablation on Fashion-MNIST",
        "",
        "Generated by `benchmarks/ablation.py` from `benchmarks/results/ablation.json`; do not edit by hand.",
        "The paper's Table 5 (ResNet-20, CIFAR-10, 4-bit) compares LSQ, +POT, +POST, +ASQ and ASQ+POST;",
        "this is the same ablation on Fashion-MNIST with qexport's small CNN, at 2, 3 and 4 bits,",
        "**scored by the exported ONNX models** run by ONNX Runtime with qexport's custom-op library",
        "(`qexport.runtime.make_session`), with the PyTorch (fake-quantized) model's accuracy beside it.",
        "",
        "## Setup",
        "",
        f"* Data: Fashion-MNIST from the Debian package `dataset-fashion-mnist`: "
        f"{'all 60,000' if not settings['limit_train'] else settings['limit_train']} training images, "
        f"test top-1 on {'all 10,000' if not settings['limit_test'] else settings['limit_test']} test images.",
        f"* Network: `small_cnn` width {settings['arch_args']['width']} (5 conv3x3-BN-ReLU, global average pool, "
        f"linear; 140 k parameters). First and last layers: 8-bit uniform weights and 8-bit LSQ activations "
        f"(the paper's setup); the 4 middle convolutions at the table's bit-width (weights and activations).",
        f"* Float model: {f['epochs']} epochs from scratch, SGD momentum 0.9, lr {f['lr']} cosine, batch "
        f"{f['batch_size']}, weight decay 1e-4, seed {f['seed']}.",
        f"* QAT (every cell): starts from that float model; `quantize_` + `calibrate` (8 batches, output-aware "
        f"refinement on 128 samples), then {q['epochs']} epochs of SGD momentum 0.9, lr {q['lr']} cosine per "
        f"step, batch {q['batch_size']}, weight decay 1e-4 (not on step sizes/alphas)"
        f"{', distillation from the float model' if q.get('distill') else ', cross-entropy only (no distillation)'}. "
        f"The model after the last epoch is scored (no best-epoch selection on the test set).",
        f"* Seeds (data order, calibration batches): {', '.join(map(str, settings['seeds']['3-4 bits']))} at 3 and 4 "
        f"bits, {', '.join(map(str, settings['seeds']['2 bits']))} at 2 bits. With two seeds a cell shows mean "
        f"±half the range.",
        "* POT/POST at 2 bits are ternary (sign + one magnitude): the paper leaves them out; they are measured "
        "here for completeness.",
        f"* Command: `nice -n 19 {settings['command'].strip()}` (resumable: rerun it after an interruption).",
        f"* PyTorch {settings['torch_version']}, CPU. Expected cost: about 3 hours on 2 otherwise idle cores "
        f"(float ~40 s/epoch, QAT ~90 s/epoch); much longer when the cores are shared (the script runs "
        f"under `nice -n 19`).",
        "* One cell by hand (what the script does through the Python API), and the same training under "
        "torchrun with DistributedDataParallel (2 processes, gloo on CPU; docs/design.md states what is identical):",
        "",
        "  ```bash",
        "  qexport train --from benchmarks/results/float_s0.pt --method asq+post --bits 4 --epochs 3 --lr 0.01 \\",
        "      --seed 0 -o asq-post_w4_s0.pt --resume --metrics-json asq-post_w4_s0.json",
        "  qexport convert asq-post_w4_s0.pt -o asq-post_w4_s0.onnx --data fashion-mnist",
        "  torchrun --nproc_per_node 2 -m qexport.cli train --from benchmarks/results/float_s0.pt --method asq+post \\",
        "      --bits 4 --epochs 3 --lr 0.01 --seed 0 -o asq-post_w4_s0_ddp.pt",
        "  ```",
        "",
        "## Top-1 of the exported ONNX models (ONNX Runtime + ai.qexport ops), percent",
        "",
        f"Float model: **{float_top1:.2f}%** (ONNX, standard ops)." if float_recs else "Float model: not measured yet.",
        "",
        "| method | " + " | ".join(f"{b}-bit ONNX | {b}-bit PyTorch" for b in bits_cols) + " |",
        "|---|" + "---:|---:|" * len(bits_cols),
    ]
    for m in methods:
        row = [LABELS[m]]
        for b in bits_cols:
            row += [cell(m, b, "onnx_top1"), cell(m, b, "torch_top1")]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "ONNX file size (KiB), weights packed to their bit-width:", "",
              "| method | " + " | ".join(f"{b}-bit" for b in bits_cols) + " |", "|---|" + "---:|" * len(bits_cols)]
    for m in methods:
        lines.append("| " + " | ".join([LABELS[m]] + [
            (f"{_mean([r['onnx_bytes'] for r in by[(m, b)]]) / 1024:.0f}" if by.get((m, b)) else "—") for b in bits_cols]) + " |")
    if float_recs:
        lines.append(f"\nFloat ONNX: {float_recs[0]['onnx_bytes'] / 1024:.0f} KiB.")

    # The acceptance criteria, computed from the records.
    lines += ["", "## Checks", ""]

    def mean_of(method: str, bits: int) -> float | None:
        rs = by.get((method, bits))
        return _mean([r["onnx_top1"] for r in rs]) if rs else None

    checks = []
    if float_recs:
        for bits, limit in ((4, 0.5), (3, 1.5)):
            v = mean_of("asq+post", bits)
            if v is not None:
                gap = float_top1 - v
                checks.append(f"* {bits}-bit ASQ+POST is {gap:+.2f} points below float (target: within {limit}): "
                              f"**{'met' if gap <= limit else 'NOT met'}**.")
    for bits in (4, 3):
        a_, l_ = mean_of("asq+post", bits), mean_of("lsq", bits)
        if a_ is not None and l_ is not None:
            line = (f"* {bits}-bit ASQ+POST {a_:.2f}% vs LSQ {l_:.2f}% ({a_ - l_:+.2f}): "
                    f"**{'at or above' if a_ >= l_ else 'below'}** LSQ.")
            if a_ < l_:
                ra = [r["onnx_top1"] for r in by[("asq+post", bits)]]
                rl = [r["onnx_top1"] for r in by[("lsq", bits)]]
                spread = max(max(rl) - min(rl), max(ra) - min(ra))
                line += (f" Per seed: LSQ {', '.join(f'{v:.2f}' for v in rl)}; ASQ+POST "
                         f"{', '.join(f'{v:.2f}' for v in ra)}.")
                if float_recs and len(rl) > 1 and abs(a_ - l_) < spread:
                    line += (f" The difference is smaller than the seed-to-seed spread ({spread:.2f} points), and both are "
                             f"within {float_top1 - min(a_, l_):.2f} points of float: at this bit-width the network "
                             f"leaves no accuracy to recover, so the seeds cannot separate the methods.")
            checks.append(line)
    worst = max(records, key=lambda r: abs(r["onnx_top1"] - r["torch_top1"]), default=None)
    if worst:
        checks.append(f"* ONNX vs PyTorch top-1: largest difference {abs(worst['onnx_top1'] - worst['torch_top1']):.2f} "
                      f"points ({cell_name(worst['method'], worst['bits'], worst['seed'])}; target: within 0.1 in every "
                      f"cell); lowest per-sample prediction agreement "
                      f"{min(r['onnx_torch_agreement'] for r in records):.4f}.")
    lines += checks or ["* no cells measured yet"]
    if missing:
        lines += ["", f"**Incomplete: {len(missing)} of {len(cells)} cells not measured yet:** "
                  + ", ".join(f"`{cell_name(c[0], c[1], c[2])}`" for c in missing) + ".",
                  "Resume with the command above; finished cells are not rerun."]

    lines += ["", "## Every cell", "",
              "| cell | float | calibrated (PyTorch) | PyTorch | ONNX | agreement | ONNX bytes | train time | file |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in sorted(records, key=lambda r: (("float",) + METHODS).index(r["method"]) * 1000 - r["bits"] * 10 + r["seed"]):
        cal = "" if r.get("calibrated_top1") is None else f"{r['calibrated_top1']:.2f}"
        lines.append(f"| {cell_name(r['method'], r['bits'], r['seed'])} | {r['float_top1']:.2f} | {cal} | "
                     f"{r['torch_top1']:.2f} | {r['onnx_top1']:.2f} | {r['onnx_torch_agreement']:.4f} | "
                     f"{r['onnx_bytes']:,} | {r['train_time_s'] / 60:.1f} min | `{r['onnx_path']}` |")
    lines += ["", "## Re-scoring a model", "",
              "Every file under `benchmarks/results/models/` takes Fashion-MNIST pixels scaled to [0, 1] as float32 "
              "(N, 1, 28, 28) (normalisation is inside the model) and returns logits for the 10 classes:", "",
              "```python", "import numpy as np, qexport.runtime", "from qexport.data import load_fashion_mnist",
              "x, y = load_fashion_mnist(\"test\")",
              "sess = qexport.runtime.make_session(\"benchmarks/results/models/asq-post_w4_s0.onnx\")",
              "pred = np.concatenate([sess.run(None, {\"input\": x[i:i + 500]})[0].argmax(1) for i in range(0, len(x), 500)])",
              "print(100 * (pred == y).mean())", "```", ""]
    atomic_write_text(path, "\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
