"""The training loop: float training or QAT (quantize_ -> calibrate -> SGD), one process or
torchrun's N (DistributedDataParallel).

``train(config)`` owns no global state: it seeds inside a forked RNG scope, so a run leaves the
caller's random streams untouched, and everything it needs arrives through ``config``.

Checkpoints: after every epoch the model and the training state (optimizer, scheduler, epoch,
best accuracy, RNG states; tensors/numbers/strings only, so ``weights_only`` loading works) go to
``config.output``, the best epoch's model to ``<stem>.best.pt``. ``resume=True`` continues an
interrupted run from its last complete epoch and ends with the same metrics as an uninterrupted
run (the data order is a function of (seed, epoch), not of how far a process got).
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import batches, has_split, load_dataset
from ..models import build_model, default_arch_args
from .config import DEFAULT_ARCH, RUNTIME_FIELDS, TrainConfig
from ..validate.steps import torch_step_stats
from .distributed import DistContext, shard_order

EVAL_BATCH = 500
STEP_STATS_SAMPLES = 2000  # test images over which each epoch reports the ASQ step spread


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    disable=not enabled, transient=True)


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = EVAL_BATCH) -> float:
    """Top-1 accuracy in percent, in eval mode (the model's mode is restored)."""
    return evaluate_loss(model, x, y, batch_size)[0]


@torch.no_grad()
def evaluate_loss(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = EVAL_BATCH,
                  ctx: DistContext | None = None) -> tuple[float, float]:
    """(top-1 in percent, mean cross-entropy) in eval mode; under torchrun each rank scores its
    shard (samples rank, rank + N, ...) and the counts are summed."""
    ctx = ctx or DistContext()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    if ctx.enabled:
        x, y = x[ctx.rank::ctx.world], y[ctx.rank::ctx.world]
    correct, loss_sum = 0.0, 0.0
    for xb, yb in batches(x, y, batch_size):
        xb, yb = xb.to(device), yb.to(device)
        out = model(xb)
        correct += int((out.argmax(1) == yb).sum())
        loss_sum += float(F.cross_entropy(out, yb, reduction="sum").double())
    model.train(was_training)
    correct, loss_sum, n = ctx.sum(correct, loss_sum, len(y))
    return 100.0 * correct / max(1.0, n), loss_sum / max(1.0, n)


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


def load_float_source(path: str | Path, output: str | Path | None = None, role: str = "QAT starts from"
                      ) -> tuple[nn.Module, str, dict[str, Any]]:
    """(model, arch, arch_args) of a float model to start from: a qexport checkpoint, or a
    torch.export program (.pt2; its checkpoints name the program, relative to ``output``)."""
    from ..checkpoint import (PROGRAM_ARCH, build_model_from_checkpoint, load_checkpoint, load_model,
                              program_arch_args)
    from ..lower.program import is_program

    path = Path(path)
    if path.is_file() and (path.suffix == ".pt2" or is_program(path)):
        loaded = load_model(path)
        return loaded.model, PROGRAM_ARCH, program_arch_args(path, output or path, loaded.sha256)
    ckpt = load_checkpoint(path)
    if ckpt.get("quant"):
        raise ValueError(f"{path} is a quantized checkpoint; {role} a float one")
    return build_model_from_checkpoint(ckpt, path), ckpt["arch"], dict(ckpt["arch_args"])


def prepare_model(config: TrainConfig, x: np.ndarray, y: np.ndarray) -> tuple[nn.Module, str, dict[str, Any]]:
    """Build the float model: from ``config.from_checkpoint`` or fresh (seeded by the caller).

    ``x``/``y``: data the model must fit (channels, labels); a fresh model's in_channels and
    num_classes default to them.
    """
    if config.from_checkpoint:
        model, arch, arch_args = load_float_source(config.from_checkpoint, config.output)
        if config.arch and config.arch != arch:
            raise ValueError(f"config.arch={config.arch!r} but {config.from_checkpoint} holds {arch!r}")
        conflicts = {k: v for k, v in config.arch_args.items() if arch_args.get(k) != v}
        if conflicts:
            raise ValueError(f"arch_args {conflicts} differ from the checkpoint's {arch_args}")
    else:
        arch = config.arch or DEFAULT_ARCH
        arch_args = _fit_arch_args(arch, config.arch_args, x, int(y.max()) + 1)
        model = build_model(arch, **arch_args)
    _check_fits(arch_args, x, y)
    return model, arch, arch_args


def lr_factor(schedule: str, step: int, total: int, warmup: int = 0) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based) of ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(max(step - warmup, 0), span) / span
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "linear":
        return 1.0 - t
    return 1.0


def make_optimizer(model: nn.Module, config: TrainConfig, total_steps: int, steps_per_epoch: int = 1
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with momentum; weight decay on everything except quantizer step sizes/alphas;
    ``config.schedule`` per step, after ``config.warmup_epochs`` of linear warm-up."""
    qids: set[int] = set()
    if config.method != "float":
        from ..nn import quant_parameters

        qids = {id(p) for p in quant_parameters(model)}
    params = [p for p in model.parameters() if p.requires_grad]
    aids = {id(p) for n, p in model.named_parameters() if ".act_quant.fc" in n} if config.method != "float" else set()
    adapter_wd = config.weight_decay if config.adapter_weight_decay is None else config.adapter_weight_decay
    if config.adapter_lr_scale == 1.0 and adapter_wd == config.weight_decay:
        aids = set()  # the adapters are trained as every weight (the default): one group
    lr = config.effective_lr
    groups = [{"params": [p for p in params if id(p) not in qids | aids], "weight_decay": config.weight_decay, "lr": lr},
              {"params": [p for p in params if id(p) in qids], "weight_decay": 0.0, "lr": lr},
              {"params": [p for p in params if id(p) in aids], "weight_decay": adapter_wd,
               "lr": lr * config.adapter_lr_scale}]
    groups = [g for g in groups if g["params"]]
    opt = torch.optim.SGD(groups, lr=lr, momentum=config.momentum)
    total = max(1, total_steps)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    schedule = config.schedule
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(schedule, step, total, warmup))
    return opt, sched


def _flip(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mask = torch.rand(xb.shape[0], generator=gen) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), xb.flip(3), xb)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, weight: float,
                 temperature: float) -> torch.Tensor:
    """(1 - w) CE(student, target) + w T^2 KL(softmax(teacher / T) || softmax(student / T))."""
    ce = F.cross_entropy(student, target)
    if weight <= 0:
        return ce
    t = temperature
    kd = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), reduction="batchmean",
                  log_target=True) * (t * t)
    return (1.0 - weight) * ce + weight * kd


def epoch_order(n: int, config: TrainConfig, epoch: int, ctx: DistContext | None = None) -> np.ndarray:
    """The sample indices this rank trains on in ``epoch``, batch after batch.

    One permutation per (seed, epoch), cut to whole global batches (a last batch of 1 would
    break BatchNorm); under torchrun each rank takes its share of every global batch.
    """
    ctx = ctx or DistContext()
    order = np.random.default_rng((config.seed, epoch)).permutation(n)
    bs = config.batch_size
    if n > bs:
        order = order[: n - n % bs]
    elif ctx.enabled:  # one batch smaller than batch_size: split what divides evenly
        bs = n - n % ctx.world
        order = order[:bs]
    return shard_order(order, ctx.rank, ctx.world, min(bs, len(order)))


def fit_epoch(model: nn.Module, opt: torch.optim.Optimizer, sched: Any, x: np.ndarray, y: np.ndarray,
              config: TrainConfig, epoch: int, on_step: Any = None, *, teacher: nn.Module | None = None,
              ctx: DistContext | None = None) -> tuple[float, float]:
    """One pass over (x, y) in a seeded order; returns (mean train loss, train top-1 in percent).

    ``model`` may be DistributedDataParallel-wrapped; under torchrun (``ctx``) each rank takes
    ``batch_size / N`` samples of every global batch and the returned numbers are over all ranks.
    """
    ctx = ctx or DistContext()
    model.train()
    gen = torch.Generator().manual_seed(config.seed * 1000 + epoch)
    device = next(model.parameters()).device
    local_bs = config.batch_size // ctx.world
    order = epoch_order(len(x), config, epoch, ctx)
    loss_sum, correct, seen = 0.0, 0, 0
    for start in range(0, len(order), max(1, local_bs)):
        idx = order[start:start + local_bs]
        xb = torch.from_numpy(np.ascontiguousarray(x[idx]))
        yb = torch.from_numpy(np.ascontiguousarray(y[idx]))
        if config.augment:
            xb = _flip(xb, gen)
        xb, yb = xb.to(device), yb.to(device)
        out = model(xb)
        if teacher is not None:
            with torch.no_grad():
                t_out = teacher(xb)
            loss = distill_loss(out, t_out, yb, config.distill_weight, config.distill_temperature)
        else:
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
    loss_sum, correct, seen = ctx.sum(loss_sum, correct, seen)
    return loss_sum / max(1.0, seen), 100.0 * correct / max(1.0, seen)


def _load_data(config: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    xtr, ytr = load_dataset(config.data, "train")
    xte, yte = load_dataset(config.test_data or config.data, "test")
    if ytr is None or yte is None:
        raise ValueError(f"dataset {config.data!r} has no labels 'y': training needs them")
    from ..inputs import Inputs

    if isinstance(xtr, Inputs) or isinstance(xte, Inputs):
        several = xtr if isinstance(xtr, Inputs) else xte
        raise ValueError(f"dataset {config.data!r} holds several inputs ({', '.join(several.names)}): qexport train "
                         f"takes models with one input. Quantize a model with several inputs post-training with "
                         f"`qexport convert model --data {config.data}`.")
    if xte.shape[1:] != xtr.shape[1:]:
        raise ValueError(f"train samples are {xtr.shape[1:]}, test samples {xte.shape[1:]}: they must match")
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
    SGD with a per-step schedule, test top-1 and loss after every epoch, the checkpoint (with the
    training state) written after every epoch -> the final metrics. With ``resume=True`` and an
    unfinished run at ``config.output``, the run continues after its last complete epoch.

    Under torchrun (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel (gloo on
    CPU, nccl on CUDA), each rank trains on its share of every batch, and rank 0 writes the files.

    Accuracies are top-1 in percent. Keys ending in ``_s`` are wall times; everything else is
    identical for two runs with the same config on the same machine, resumed or not.

    Example:
        >>> metrics = train(TrainConfig(method="asq+post", bits=4, epochs=2,
        ...                             from_checkpoint="samples/small_cnn_float.pt", output="out/q.pt"))
    """
    ctx = DistContext.from_env()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            return _train(config, ctx)
    finally:
        ctx.close()


def best_path(output: str | Path) -> Path:
    """Where the best epoch's model goes: ``run.pt`` -> ``run.best.pt``."""
    p = Path(output)
    return p.with_name(p.stem + ".best" + (p.suffix or ".pt"))


# Fields that name files or folders: compared as the files they name, not as the strings typed, so
# that a run resumes from another folder (or with ./ or an absolute path) when it is the same run.
PATH_FIELDS = ("from_checkpoint", "output", "teacher", "data", "test_data")


def _comparable(d: dict[str, Any], cwd: str | None = None) -> dict[str, Any]:
    """The settings that must match to resume, paths resolved against ``cwd`` (the run's folder)."""
    out = {k: v for k, v in d.items() if k not in RUNTIME_FIELDS}
    base = Path(cwd or os.getcwd())
    for k in PATH_FIELDS:
        v = out.get(k)
        if isinstance(v, str) and v:
            p = Path(v) if Path(v).is_absolute() else base / v
            if p.exists() or k in ("output", "from_checkpoint", "teacher"):
                out[k] = os.path.realpath(p)
    return out


def _resume_state(config: TrainConfig) -> dict[str, Any] | None:
    """The checkpoint at config.output if it holds a run of this config, else None (fresh start)."""
    from ..checkpoint import CheckpointError, load_checkpoint

    if not config.resume or not Path(config.output).is_file():
        return None
    ckpt = load_checkpoint(config.output)
    state = ckpt.get("extra", {}).get("train_state")
    if not isinstance(state, dict):
        raise CheckpointError(f"{config.output}: holds no training state to resume from (not written by "
                              f"`qexport train`); remove it or choose another --output")
    # settings added since the checkpoint was written take their defaults (what that run used)
    saved = _comparable({**TrainConfig().to_dict(), **state["config"]}, state.get("cwd"))
    now = _comparable(config.to_dict())
    diff = {k: (saved.get(k), now.get(k)) for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)}
    if diff:
        detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"--resume: {config.output} was written by a run with other settings ({detail}); "
                         f"resume with the same settings, or drop --resume to start afresh")
    return ckpt


def _load_teacher(config: TrainConfig, device: torch.device) -> nn.Module | None:
    path = config.teacher_path
    if path is None:
        return None
    teacher = load_float_source(path, role="distil from")[0].to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _start_run(config: TrainConfig, ctx: DistContext, resumed: dict | None, xtr, ytr, xte, yte):
    """(model, arch, arch_args, QuantConfig or None, metrics) of a resumed run, or of a new one:
    the model prepared, quantized and calibrated, its first metrics measured."""
    from ..quant.config import QuantConfig

    if resumed is not None:
        from ..checkpoint import build_model_from_checkpoint

        model = build_model_from_checkpoint(resumed).to(ctx.device)
        qconfig = QuantConfig.from_dict(resumed["quant"]) if resumed.get("quant") else None
        return model, resumed["arch"], dict(resumed["arch_args"]), qconfig, dict(resumed["metrics"])
    model, arch, arch_args = prepare_model(config, xtr, np.concatenate([ytr, yte]))
    model.to(ctx.device)
    metrics = {
        "arch": arch, "arch_args": arch_args, "method": config.method,
        "bits": None if config.method == "float" else config.bits, "quant": None,
        "config": config.to_dict(), "lr": config.effective_lr,
        "data": {"name": config.data, "train_samples": int(len(xtr)), "test_samples": int(len(xte))},
        "init_float_test_acc": None, "calibrated_test_acc": None,
        "epochs": [], "torch_version": str(torch.__version__),
    }
    if config.test_data is not None:
        metrics["data"]["test_name"] = config.test_data
    if config.test_data is None and not has_split(config.data, "test"):
        metrics["data"]["test_is_train"] = True
    if ctx.enabled:
        metrics["world_size"] = ctx.world
    if config.from_checkpoint:
        metrics["init_float_test_acc"] = evaluate_loss(model, xte, yte, ctx=ctx)[0]
    qconfig = None
    if config.method != "float":
        from ..nn import calibrate, quantize_

        qconfig = QuantConfig(method=config.method, bits=config.bits, **config.quant_args)
        quantize_(model, qconfig)
        model.to(ctx.device)
        t0 = time.perf_counter()
        # Every rank calibrates on the same seeded batches, so all start from the same model
        # (DDP also broadcasts rank 0's parameters and buffers when it wraps the model).
        calibrate(model, _calibration_batches(xtr, config), refine_samples=config.calib_refine_samples)
        metrics["calibration_time_s"] = time.perf_counter() - t0
        if config.size_budget is not None:
            qconfig = _search_bits(model, qconfig, config, xtr, ytr, metrics)
        if "perparam" in config.method:
            _adapt_widths(model, config, xtr, ytr, metrics)
        metrics["quant"] = qconfig.to_dict()
        metrics["calibrated_test_acc"] = evaluate_loss(model, xte, yte, ctx=ctx)[0]
    metrics["parameters"] = int(sum(p.numel() for p in model.parameters()))
    return model, arch, arch_args, qconfig, metrics


def _search_bits(model: nn.Module, qconfig, config: TrainConfig, xtr, ytr, metrics: dict):
    """Cheng et al.'s search of the weight bit-widths (qexport.nn.mixed.search) on the training
    data; returns the QuantConfig with the found widths as overrides (what the checkpoint keeps)."""
    from dataclasses import replace

    from ..nn.mixed import bits_summary, code_bytes, parse_budget, search

    t0 = time.perf_counter()
    device = next(model.parameters()).device
    found, summary = search(model, qconfig, torch.as_tensor(xtr).to(device), torch.as_tensor(ytr).long().to(device),
                            parse_budget(config.size_budget), choices=config.bit_choices,
                            granularity=config.granularity, steps=config.search_steps, batch_size=config.batch_size,
                            seed=config.seed)
    summary.update(time_s=time.perf_counter() - t0, code_bytes=code_bytes(model), layers=bits_summary(model))
    metrics["bit_search"] = summary
    return replace(qconfig, overrides=tuple(qconfig.overrides) + tuple(found))


def _adapt_widths(model: nn.Module, config: TrainConfig, xtr, ytr, metrics: dict) -> None:
    """Khoram and Li's per-parameter widths (qexport.nn.perparam.adapt): rounds judged on
    ``perparam_val_samples`` held-out training samples against the float model's accuracy there."""
    from ..nn.perparam import adapt

    device = next(model.parameters()).device
    n_val = min(config.perparam_val_samples, len(xtr) // 5)
    if n_val < 1:
        raise ValueError(f"per-parameter precision needs held-out training samples: {len(xtr)} are too few")
    perm = np.random.default_rng(config.seed).permutation(len(xtr))
    xv, yv = xtr[perm[:n_val]], ytr[perm[:n_val]]
    xt, yt = xtr[perm[n_val:]], ytr[perm[n_val:]]
    reference = None
    if config.from_checkpoint:
        reference = evaluate(load_float_source(config.from_checkpoint)[0], xv, yv)
    as_t = lambda a: torch.as_tensor(a).to(device)  # noqa: E731
    say = print if config.progress else (lambda s: None)
    metrics["perparam"] = adapt(model, as_t(xt), as_t(yt).long(), as_t(xv), as_t(yv).long(),
                                rounds=config.perparam_rounds, steps=config.perparam_steps,
                                tolerance=config.perparam_tolerance, reference_acc=reference,
                                growth=config.perparam_growth, lr=config.effective_lr, batch_size=config.batch_size,
                                seed=config.seed, log=say)


def _restore_optimizer(resumed: dict | None, opt, sched, ctx: DistContext) -> tuple[int, float, int, list[int]]:
    """(first epoch to run, best test accuracy, its epoch, epochs after which the run resumed),
    with the optimizer, scheduler and this rank's RNG restored when resuming."""
    if resumed is None:
        return 1, -math.inf, 0, []
    state = resumed["extra"]["train_state"]
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    rng = state.get("torch_rng") or []
    if len(rng) == ctx.world:
        torch.set_rng_state(rng[ctx.rank])
    resumes = [int(e) for e in state.get("resumes", [])] + [int(state["epoch"])]
    return int(state["epoch"]) + 1, float(state["best_test_acc"]), int(state["best_epoch"]), resumes


def _wrap_ddp(model: nn.Module, ctx: DistContext) -> nn.Module:
    """The module the training steps call: the model itself, or under torchrun its DDP wrapper."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) if ctx.device.type == "cuda" else model
    return DistributedDataParallel(net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def _log_start(log, config: TrainConfig, metrics: dict, resuming: bool, start_epoch: int) -> None:
    if resuming:
        log(f"resuming {config.output} after epoch {start_epoch - 1}/{config.epochs}")
        return
    if metrics["init_float_test_acc"] is not None:
        log(f"float model from {config.from_checkpoint}: test top-1 {metrics['init_float_test_acc']:.2f}%")
    if metrics["calibrated_test_acc"] is not None:
        log(f"{config.method} {config.bits}-bit after calibration: test top-1 {metrics['calibrated_test_acc']:.2f}%")


def _steps_line(steps: dict) -> str:
    return "  ASQ per-sample step over test images, std/mean (min..max) of beta: " + "; ".join(
        f"{n.removesuffix('.act_quant')} {v['cv']:.2%} ({v['min']:.3g}..{v['max']:.3g})" for n, v in steps.items())


def _train(config: TrainConfig, ctx: DistContext) -> dict[str, Any]:
    # Over 80 lines on purpose: the epoch loop and the two closures (save, write_metrics) share the
    # run's state (optimizer, best accuracy, resumes); setup and restore are the helpers above.
    t_start = time.perf_counter()
    if ctx.enabled and config.batch_size % ctx.world:
        raise ValueError(f"batch_size {config.batch_size} must be a multiple of the {ctx.world} torchrun processes")
    xtr, ytr, xte, yte = _load_data(config)
    device = ctx.device
    resumed = _resume_state(config)
    if resumed is not None and resumed["extra"]["train_state"].get("complete"):
        return resumed["metrics"]  # a finished run: nothing left to do
    model, arch, arch_args, qconfig, metrics = _start_run(config, ctx, resumed, xtr, ytr, xte, yte)

    teacher = _load_teacher(config, device)
    n_train = len(xtr)
    steps_per_epoch = max(1, len(epoch_order(n_train, config, 1, ctx)) // max(1, config.batch_size // ctx.world))
    opt, sched = make_optimizer(model, config, config.epochs * steps_per_epoch, steps_per_epoch)
    start_epoch, best_acc, best_epoch, resumes = _restore_optimizer(resumed, opt, sched, ctx)
    net = _wrap_ddp(model, ctx)

    def save(epoch: int, complete: bool) -> None:
        """Rank 0 writes <output> (model + training state) atomically; the others wait."""
        if config.output and ctx.is_main:
            from ..checkpoint import save_checkpoint

            rng = ctx.all_gather_bytes(torch.get_rng_state()) if ctx.enabled else [torch.get_rng_state()]
            state = {"epoch": epoch, "complete": complete, "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "torch_rng": rng, "best_test_acc": best_acc,
                     "best_epoch": best_epoch, "config": config.to_dict(), "world_size": ctx.world,
                     "resumes": resumes, "cwd": os.getcwd()}
            save_checkpoint(config.output, model=model, arch=arch, arch_args=arch_args, quant=qconfig,
                            metrics=metrics, extra={"train_state": state})
        elif config.output and ctx.enabled:
            ctx.all_gather_bytes(torch.get_rng_state())
        ctx.barrier()

    def write_metrics() -> None:
        if config.metrics_json and ctx.is_main:
            import json

            from ..io import atomic_write_text

            atomic_write_text(config.metrics_json, json.dumps(metrics, indent=2) + "\n")

    last_acc = (metrics["epochs"][-1]["test_acc"] if metrics["epochs"] else
                metrics["calibrated_test_acc"] if qconfig else metrics["init_float_test_acc"])

    with _progress(config.progress and ctx.is_main) as progress:
        log = progress.console.print if (config.progress and ctx.is_main) else (lambda *a, **k: None)
        _log_start(log, config, metrics, resumed is not None, start_epoch)
        for epoch in range(start_epoch, config.epochs + 1):
            task = progress.add_task(f"epoch {epoch}/{config.epochs}", total=steps_per_epoch, status="")
            t0 = time.perf_counter()

            def on_step(loss: float, task: Any = task) -> None:
                progress.update(task, advance=1, status=f"loss {loss:.3f}")

            lr = opt.param_groups[0]["lr"]
            train_loss, train_acc = fit_epoch(net, opt, sched, xtr, ytr, config, epoch, on_step, teacher=teacher, ctx=ctx)
            t_train = time.perf_counter() - t0
            last_acc, test_loss = evaluate_loss(model, xte, yte, ctx=ctx)
            row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
                   "test_acc": last_acc, "test_loss": test_loss, "train_time_s": t_train,
                   "time_s": time.perf_counter() - t0}
            steps = torch_step_stats(model, xte[:STEP_STATS_SAMPLES])
            if steps:  # what the ASQ adapters learned: the per-sample spread of each step
                row["asq_step_spread"] = steps
            metrics["epochs"].append(row)
            progress.remove_task(task)
            improved = last_acc > best_acc
            if improved:
                best_acc, best_epoch = last_acc, epoch
            metrics["best_test_acc"], metrics["best_epoch"] = best_acc, best_epoch
            if improved and config.keep_best and config.output and ctx.is_main:
                from ..checkpoint import save_checkpoint

                save_checkpoint(best_path(config.output), model=model, arch=arch, arch_args=arch_args,
                                quant=qconfig, metrics={**metrics, "final_test_acc": last_acc},
                                extra={"best_of": str(config.output)})
            save(epoch, complete=False)
            write_metrics()
            log(f"epoch {epoch}/{config.epochs}: loss {train_loss:.4f}, train {train_acc:.2f}%, "
                f"test {last_acc:.2f}%, {row['time_s']:.0f} s")
            if steps:
                log(_steps_line(steps), highlight=False)

    if last_acc is None:  # epochs=0 on a fresh float model: still report its accuracy
        last_acc = evaluate_loss(model, xte, yte, ctx=ctx)[0]
    if not metrics["epochs"]:
        metrics["best_test_acc"], metrics["best_epoch"] = last_acc, 0
    metrics["final_test_acc"] = last_acc
    metrics["wall_time_s"] = time.perf_counter() - t_start
    save(config.epochs, complete=True)
    write_metrics()
    return metrics
