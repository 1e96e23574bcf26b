"""The training loop: float training or QAT (quantize_ -> calibrate -> SGD), single process.

``train(config)`` owns no global state: it seeds inside a forked RNG scope, so a run leaves the
caller's random streams untouched, and everything it needs arrives through ``config``. The
pieces (``prepare_model``, ``make_optimizer``, ``fit_epoch``, ``evaluate``) are separate so a
distributed runner can reuse them.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import batches, load_dataset
from ..models import build_model, default_arch_args
from .config import DEFAULT_ARCH, TrainConfig

EVAL_BATCH = 500


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    disable=not enabled, transient=True)


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = EVAL_BATCH) -> float:
    """Top-1 accuracy in percent, in eval mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    correct = 0
    for xb, yb in batches(x, y, batch_size):
        correct += int((model(xb).argmax(1) == yb).sum())
    model.train(was_training)
    return 100.0 * correct / max(1, len(y))


def _fit_arch_args(arch: str, given: dict[str, Any], x: np.ndarray, classes: int) -> dict[str, Any]:
    """Defaults, then the user's overrides, then in_channels/num_classes (and mean/std) from data."""
    args = default_arch_args(arch)
    args.update(given)
    channels = int(x.shape[1])
    if "in_channels" in args and "in_channels" not in given and args["in_channels"] != channels:
        args["in_channels"] = channels
        if "mean" in args and "mean" not in given and "std" not in given:
            args["mean"] = [round(float(v), 4) for v in x.mean(axis=(0, 2, 3))]
            args["std"] = [round(float(v), 4) for v in x.std(axis=(0, 2, 3))]
    if "num_classes" in args and "num_classes" not in given:
        args["num_classes"] = classes
    return args


def _check_fits(arch_args: dict[str, Any], x: np.ndarray, y: np.ndarray) -> None:
    if "in_channels" in arch_args and arch_args["in_channels"] != x.shape[1]:
        raise ValueError(f"the model takes {arch_args['in_channels']} input channels, the data have {x.shape[1]}")
    if "num_classes" in arch_args and int(y.max()) >= arch_args["num_classes"]:
        raise ValueError(f"the model has {arch_args['num_classes']} classes, the data have label {int(y.max())}")


def prepare_model(config: TrainConfig, x: np.ndarray, y: np.ndarray) -> tuple[nn.Module, str, dict[str, Any]]:
    """Build the float model: from ``config.from_checkpoint`` or fresh (seeded by the caller).

    ``x``/``y``: data the model must fit (channels, labels); a fresh model's in_channels and
    num_classes default to them.
    """
    if config.from_checkpoint:
        from ..checkpoint import build_model_from_checkpoint, load_checkpoint

        ckpt = load_checkpoint(config.from_checkpoint)
        if ckpt.get("quant"):
            raise ValueError(f"{config.from_checkpoint} is a quantized checkpoint; QAT starts from a float one")
        arch, arch_args = ckpt["arch"], dict(ckpt["arch_args"])
        if config.arch and config.arch != arch:
            raise ValueError(f"config.arch={config.arch!r} but {config.from_checkpoint} holds {arch!r}")
        conflicts = {k: v for k, v in config.arch_args.items() if arch_args.get(k) != v}
        if conflicts:
            raise ValueError(f"arch_args {conflicts} differ from the checkpoint's {arch_args}")
        model = build_model_from_checkpoint(ckpt)
    else:
        arch = config.arch or DEFAULT_ARCH
        arch_args = _fit_arch_args(arch, config.arch_args, x, int(y.max()) + 1)
        model = build_model(arch, **arch_args)
    _check_fits(arch_args, x, y)
    return model, arch, arch_args


def make_optimizer(model: nn.Module, config: TrainConfig, total_steps: int
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with momentum; weight decay on everything except quantizer step sizes/alphas; cosine per step."""
    qids: set[int] = set()
    if config.method != "float":
        from ..nn import quant_parameters

        qids = {id(p) for p in quant_parameters(model)}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in qids], "weight_decay": config.weight_decay},
              {"params": [p for p in params if id(p) in qids], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    opt = torch.optim.SGD(groups, lr=config.effective_lr, momentum=config.momentum)
    total = max(1, total_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total)))
    return opt, sched


def _flip(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mask = torch.rand(xb.shape[0], generator=gen) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), xb.flip(3), xb)


def fit_epoch(model: nn.Module, opt: torch.optim.Optimizer, sched: Any, x: np.ndarray, y: np.ndarray,
              config: TrainConfig, epoch: int, on_step: Any = None) -> tuple[float, float]:
    """One pass over (x, y) in a seeded order; returns (mean train loss, train top-1 in percent)."""
    model.train()
    gen = torch.Generator().manual_seed(config.seed * 1000 + epoch)
    loss_sum, correct, seen = 0.0, 0, 0
    drop_last = len(x) > config.batch_size  # a final batch of 1 would break BatchNorm
    for xb, yb in batches(x, y, config.batch_size, shuffle=True, seed=(config.seed, epoch), drop_last=drop_last):
        if config.augment:
            xb = _flip(xb, gen)
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss)} in epoch {epoch}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        n = len(yb)
        loss_sum += float(loss.detach()) * n
        correct += int((out.argmax(1) == yb).sum())
        seen += n
        if on_step is not None:
            on_step(float(loss.detach()))
    return loss_sum / max(1, seen), 100.0 * correct / max(1, seen)


def _load_data(config: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    xtr, ytr = load_dataset(config.data, "train")
    xte, yte = load_dataset(config.data, "test")
    if ytr is None or yte is None:
        raise ValueError(f"dataset {config.data!r} has no labels 'y': training needs them")
    if config.limit_train is not None and config.limit_train < len(xtr):
        idx = np.sort(np.random.default_rng(config.seed).permutation(len(xtr))[: config.limit_train])
        xtr, ytr = xtr[idx], ytr[idx]
    if config.limit_test is not None:
        xte, yte = xte[: config.limit_test], yte[: config.limit_test]
    return xtr, ytr, xte, yte


def _calibration_batches(x: np.ndarray, config: TrainConfig) -> Iterator[torch.Tensor]:
    it = batches(x, None, config.batch_size, shuffle=True, seed=(config.seed, 1 << 20))
    for i, (xb, _) in enumerate(it):
        if i >= config.calib_batches:
            break
        yield xb


def train(config: TrainConfig) -> dict[str, Any]:
    """Train (or quantization-aware train) a model as ``config`` says; returns the metrics.

    Flow: load data -> build the float model (fresh or ``from_checkpoint``) -> if
    ``method != "float"``: ``quantize_`` + ``calibrate`` on ``calib_batches`` training batches ->
    SGD with a per-step cosine schedule, test top-1 after every epoch -> save the final model to
    ``config.output`` with ``qexport.checkpoint.save_checkpoint``.

    Accuracies are top-1 in percent. Keys ending in ``_s`` are wall times; everything else is
    identical for two runs with the same config on the same machine.

    Example:
        >>> metrics = train(TrainConfig(method="asq+post", bits=4, epochs=2,
        ...                             from_checkpoint="samples/small_cnn_float.pt", output="out/q.pt"))
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return _train(config)


def _train(config: TrainConfig) -> dict[str, Any]:
    t_start = time.perf_counter()
    xtr, ytr, xte, yte = _load_data(config)
    model, arch, arch_args = prepare_model(config, xtr, np.concatenate([ytr, yte]))

    metrics: dict[str, Any] = {
        "arch": arch, "arch_args": arch_args, "method": config.method,
        "bits": None if config.method == "float" else config.bits, "quant": None,
        "config": config.to_dict(), "lr": config.effective_lr,
        "data": {"name": config.data, "train_samples": int(len(xtr)), "test_samples": int(len(xte))},
        "init_float_test_acc": None, "calibrated_test_acc": None,
        "epochs": [], "torch_version": str(torch.__version__),
    }
    if config.from_checkpoint:
        metrics["init_float_test_acc"] = evaluate(model, xte, yte)

    qconfig = None
    if config.method != "float":
        from ..nn import calibrate, quantize_
        from ..quant.config import QuantConfig

        qconfig = QuantConfig(method=config.method, bits=config.bits, **config.quant_args)
        quantize_(model, qconfig)
        t0 = time.perf_counter()
        calibrate(model, _calibration_batches(xtr, config))
        metrics["calibration_time_s"] = time.perf_counter() - t0
        metrics["quant"] = qconfig.to_dict()
        metrics["calibrated_test_acc"] = evaluate(model, xte, yte)
    metrics["parameters"] = int(sum(p.numel() for p in model.parameters()))

    steps_per_epoch = len(xtr) // config.batch_size if len(xtr) > config.batch_size else 1
    opt, sched = make_optimizer(model, config, config.epochs * steps_per_epoch)
    last_acc = metrics["calibrated_test_acc"] if qconfig else metrics["init_float_test_acc"]

    with _progress(config.progress) as progress:
        log = progress.console.print if config.progress else (lambda *a, **k: None)
        if metrics["init_float_test_acc"] is not None:
            log(f"float model from {config.from_checkpoint}: test top-1 {metrics['init_float_test_acc']:.2f}%")
        if metrics["calibrated_test_acc"] is not None:
            log(f"{config.method} {config.bits}-bit after calibration: test top-1 {metrics['calibrated_test_acc']:.2f}%")
        for epoch in range(1, config.epochs + 1):
            task = progress.add_task(f"epoch {epoch}/{config.epochs}", total=steps_per_epoch, status="")
            t0 = time.perf_counter()

            def on_step(loss: float, task: Any = task) -> None:
                progress.update(task, advance=1, status=f"loss {loss:.3f}")

            lr = opt.param_groups[0]["lr"]
            train_loss, train_acc = fit_epoch(model, opt, sched, xtr, ytr, config, epoch, on_step)
            t_train = time.perf_counter() - t0
            last_acc = evaluate(model, xte, yte)
            row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                   "test_acc": last_acc, "train_time_s": t_train, "time_s": time.perf_counter() - t0}
            metrics["epochs"].append(row)
            progress.remove_task(task)
            log(f"epoch {epoch}/{config.epochs}: loss {train_loss:.4f}, train {train_acc:.2f}%, "
                f"test {last_acc:.2f}%, {row['time_s']:.0f} s")

    if last_acc is None:  # epochs=0 on a fresh float model: still report its accuracy
        last_acc = evaluate(model, xte, yte)
    accs = [r["test_acc"] for r in metrics["epochs"]]
    if accs:
        best = int(np.argmax(accs))
        metrics["best_test_acc"], metrics["best_epoch"] = accs[best], best + 1
    else:
        metrics["best_test_acc"], metrics["best_epoch"] = last_acc, 0
    metrics["final_test_acc"] = last_acc
    metrics["wall_time_s"] = time.perf_counter() - t_start

    if config.output:
        from ..checkpoint import save_checkpoint

        Path(config.output).parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(config.output, model=model, arch=arch, arch_args=arch_args, quant=qconfig, metrics=metrics)
    return metrics
