"""Post-training fitting: after calibration, learn the quantization parameters from unlabelled data.

Calibration sets every step from statistics; that is blind to what a layer's error does
downstream and never trains an ASQ adapter (its beta stays at the initial ~1). ``fit`` fixes
both with the float model as the teacher, on the calibration inputs only (no labels):

1. ``init_adapters``: every ASQ adapter is regressed onto the per-sample step that minimises
   that sample's own quantization error (relative to the layer's calibrated step), so beta
   follows each input's scale from the start.
2. Reconstruction: the quantized model is trained to reproduce the float model, loss = the sum
   over quantized layers of their output's squared error normalised by the float output's
   energy, plus the same on the logits (the layer outputs are read with forward hooks, so any
   module tree works). Trainable: activation steps, ASQ adapters, weight scales, biases and,
   unless ``weights=False``, the latent float weights (through the STE, with a small learning
   rate, so that each weight may move to a neighbouring level: the rounding choice of
   AdaRound/BRECQ, learned end to end). BatchNorm stays in eval mode (its statistics are the
   float model's).

The float model is the teacher; validation of the result (agreement with the float model on
held-out samples) is the caller's job (``qexport.convert`` does it).
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..inputs import run, split
from ..io import batch_size_for
from ..quant.asq import AsqActQuantizer
from ..quant.base import ActQuantizer, WeightQuantizer
from .layers import QuantMixin


FIT_STEPS_ENV = "QEXPORT_FIT_STEPS"  # overrides the default number of steps (the test suite sets it low)


def _default_steps() -> int:
    value = os.environ.get(FIT_STEPS_ENV, "")
    return int(value) if value.strip().isdigit() else 200


@dataclass
class FitOptions:
    """Budget and learning rates of :func:`fit`.

    steps: optimiser steps of the reconstruction (0: none). Default 200, or $QEXPORT_FIT_STEPS.
    batch_size: samples per step (drawn from the calibration inputs, seeded).
    lr: Adam learning rate of the ASQ adapters and the biases (cosine decay to 0).
    scale_lr: Adam learning rate of the activation steps and weight scales, relative to each
        one's calibrated value (a step moves by about 0.5% of itself per step at most; an
        absolute rate drove the 0.001 steps of a 224x224 MobileNet negative in 3 steps).
    weight_lr: Adam learning rate of the latent weights, relative to each layer's weight
        scale (a weight moves by about ``weight_lr`` of a level per step at most); 0 freezes
        the weights.
    seed: the order of the batches.
    """

    steps: int = field(default_factory=_default_steps)
    batch_size: int = 32
    lr: float = 1e-3
    scale_lr: float = 5e-3
    weight_lr: float = 1e-3
    seed: int = 0


def _act_quantizers(model: nn.Module) -> list[ActQuantizer]:
    return [m.act_quant for m in model.modules() if isinstance(m, QuantMixin)]


_TARGET_VALUES = 4096  # values per sample that decide its best step


def _sample_values(x: torch.Tensor) -> torch.Tensor:
    """(N, <= _TARGET_VALUES): each sample's values, or a fixed, evenly spaced subsample of them."""
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] > _TARGET_VALUES:
        flat = flat[:, torch.linspace(0, flat.shape[1] - 1, _TARGET_VALUES).long()]
    return flat


def _best_sample_steps(x: torch.Tensor, step: float, lo: int, hi: int,
                       ratios: torch.Tensor) -> torch.Tensor:
    """Per sample, the step among ``step * ratios`` with the least squared quantization error."""
    flat = _sample_values(x)
    errs = []
    for r in ratios.tolist():
        s = step * r
        errs.append(((torch.clamp(torch.round(flat / s), lo, hi) * s - flat) ** 2).mean(dim=1))
    best = torch.stack(errs, dim=1).argmin(dim=1)
    return ratios[best]


def init_adapters(model: nn.Module, x: torch.Tensor, *, iters: int = 200, batch_size: int = 128) -> dict[str, float]:
    """Regress each ASQ adapter's beta onto the per-sample error-minimising step ratio.

    Returns {quantizer name: std/mean of the target ratios} (how much the best step varies
    between the samples). One pass over ``x`` (in batches of ``batch_size``, every layer
    quantized with its calibrated step and its adapter as initialised) records, per quantizer
    and sample, the adapter's input features and a fixed subsample of the input values; then
    every adapter is fitted on what it saw. Memory: about 16 KB per sample and quantizer, not
    the activations themselves (a 224x224 network's would be gigabytes).
    """
    names = {id(m): n for n, m in model.named_modules()}
    spread: dict[str, float] = {}
    ratios = torch.exp(torch.linspace(math.log(0.25), math.log(4.0), 25))  # 12% apart
    quants = [q for q in _act_quantizers(model) if isinstance(q, AsqActQuantizer) and q.beta_map == "relu"]
    if not quants:
        return spread
    seen: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {id(q): ([], []) for q in quants}

    def record(mod: AsqActQuantizer, inp: tuple) -> None:
        xin = inp[0].detach()
        values, feats = seen[id(mod)]
        values.append(_sample_values(xin))
        feats.append(mod.adapter_input(xin).detach())

    was_training = model.training
    model.eval()
    hooks = [q.register_forward_pre_hook(record) for q in quants]
    try:
        with torch.no_grad():
            for xb in split(x, batch_size_for(x, batch_size)):
                run(model, xb)
    finally:
        for h in hooks:
            h.remove()
    jobs: list[tuple[AsqActQuantizer, torch.Tensor, torch.Tensor]] = []
    for q in quants:
        values, feats_list = seen.pop(id(q))
        if not values:  # not on the forward path
            continue
        lo, hi = q.qrange()
        target = _best_sample_steps(torch.cat(values), float(q.step.detach()), lo, hi, ratios)
        # Relative to the samples' mean: the calibrated step keeps the level, beta the variation.
        target = target / target.mean()
        spread[names[id(q)]] = float(target.std())
        jobs.append((q, torch.cat(feats_list), torch.log(target)))
    if jobs:
        # Every adapter regressed at once: the sum of their losses has each adapter's own gradient
        # (no parameter is shared) and Adam is elementwise, so this is exactly one Adam per
        # adapter, with one backward pass and one optimizer step per iteration instead of one each.
        params = [p for q, _, _ in jobs for p in (q.fc1.weight, q.fc1.bias, q.fc2.weight, q.fc2.bias)]
        opt = torch.optim.Adam(params, lr=1e-2)
        with torch.enable_grad():
            for _ in range(iters):
                opt.zero_grad(set_to_none=True)
                loss = sum(((torch.log(q.beta(feats).clamp_min(1e-6)) - log_target) ** 2).mean()
                           for q, feats, log_target in jobs)
                loss.backward()
                opt.step()
    model.train(was_training)
    return spread


def _layer_outputs(model: nn.Module, names: list[str]) -> tuple[dict[str, torch.Tensor], list]:
    store: dict[str, torch.Tensor] = {}
    hooks = []
    for name in names:
        mod = model.get_submodule(name)
        hooks.append(mod.register_forward_hook(lambda m, i, o, name=name: store.__setitem__(name, o)))
    return store, hooks


def fit(model: nn.Module, teacher: nn.Module, x: torch.Tensor, options: FitOptions | None = None, *,
        weights: bool = True, progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Fit ``model`` (quantized and calibrated) to reproduce ``teacher`` (its float original) on ``x``.

    ``teacher`` must have the float layers under the same module names as ``model``'s quantized
    ones. ``progress(step, steps, loss)`` is called after every step. Returns a summary: the
    reconstruction loss before and after, and the adapter initialisation's spread of targets.
    """
    opts = options or FitOptions()
    names = [n for n, m in model.named_modules() if isinstance(m, QuantMixin)]
    if not names:
        raise ValueError("model has no quantized layers: quantize_() and calibrate() it first")
    missing = [n for n in names if not isinstance(_get(teacher, n), (nn.Conv1d, nn.Conv2d, nn.Linear))]
    if missing:
        raise ValueError(f"the teacher has no float layer named {missing[0]!r}: pass the float model that was quantized")
    teacher = copy.deepcopy(teacher).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    summary = {"steps": opts.steps, "samples": int(len(x))}
    if opts.steps <= 0:
        return summary

    t_store, t_hooks = _layer_outputs(teacher, names)
    s_store, s_hooks = _layer_outputs(model, names)
    params, scales, weight_params = _trainable(model, weights)
    groups = [{"params": params, "lr": opts.lr}]
    groups += [{"params": [p], "lr": opts.scale_lr * size} for p, size in scales]
    floors = [(p, 1e-3 * p.detach().abs().clone()) for p, _ in scales]
    if weight_params:
        groups += [{"params": [p], "lr": opts.weight_lr * lr_scale} for p, lr_scale in weight_params]
    opt = torch.optim.Adam(groups)
    base = [g["lr"] for g in opt.param_groups]
    gen = torch.Generator().manual_seed(opts.seed)
    was_training = model.training
    model.eval()  # BatchNorm keeps the float model's statistics; quantizers run as in training

    def sums(xb: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(squared error, squared target) of the logits and of every quantized layer's output."""
        with torch.no_grad():
            t_out = run(teacher, xb)
            targets = {n: t_store[n].detach() for n in names}
        s_out = run(model, xb)
        pairs = [(s_out, t_out)] + [(s_store[n], targets[n]) for n in names]
        with torch.no_grad():
            refs = [torch.linalg.vector_norm(target.reshape(-1)) ** 2 for _, target in pairs]
        return [(F.mse_loss(out, target, reduction="sum"), ref) for (out, target), ref in zip(pairs, refs)]

    def loss_on(xb: torch.Tensor) -> torch.Tensor:
        return sum(err / ref.clamp_min(1e-12) for err, ref in sums(xb)) / (len(names) + 1)

    @torch.no_grad()
    def probe_loss(xp: torch.Tensor) -> float:
        """loss_on(xp), summed over chunks (one batch of 256 at 224x224 held gigabytes of outputs)."""
        totals = None
        for xb in split(xp, max(1, opts.batch_size)):
            chunk = [(float(e), float(r)) for e, r in sums(xb)]
            totals = chunk if totals is None else [(a + e, b + r) for (a, b), (e, r) in zip(totals, chunk)]
        return sum(e / max(r, 1e-12) for e, r in totals) / (len(names) + 1)

    # The reported loss before/after: up to 256 samples, fewer when batches are small (large inputs).
    probe_n = min(len(x), 256, 8 * opts.batch_size)
    probe = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(opts.seed + 1))[:probe_n]]
    try:
        summary["loss_before"] = probe_loss(probe)
        for step in range(opts.steps):
            idx = torch.randint(0, len(x), (min(opts.batch_size, len(x)),), generator=gen)
            loss = loss_on(x[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():  # steps and scales stay positive
                for p, floor in floors:
                    torch.maximum(p, floor, out=p)
            factor = 0.5 * (1 + math.cos(math.pi * (step + 1) / opts.steps))
            for g, b in zip(opt.param_groups, base):
                g["lr"] = b * factor
            if progress is not None:
                progress(step + 1, opts.steps, float(loss.detach()))
        summary["loss_after"] = probe_loss(probe)
    finally:
        for h in t_hooks + s_hooks:
            h.remove()
        model.train(was_training)
    return summary


def _get(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _trainable(model: nn.Module, weights: bool) -> tuple[list[nn.Parameter], list[tuple[nn.Parameter, float]],
                                                          list[tuple[nn.Parameter, float]]]:
    """(adapter parameters and biases, [(step or weight scale, its mean magnitude)],
    [(latent weight, its per-layer learning-rate scale)])."""
    params: list[nn.Parameter] = []
    scales: list[tuple[nn.Parameter, float]] = []
    weight_params: list[tuple[nn.Parameter, float]] = []
    for m in model.modules():
        if isinstance(m, (ActQuantizer, WeightQuantizer)):
            scale = m.step if isinstance(m, ActQuantizer) else m.param
            if scale.requires_grad:
                scales.append((scale, max(float(scale.detach().abs().mean()), 1e-12)))
            params += [p for p in m.parameters(recurse=True) if p is not scale]
        elif isinstance(m, QuantMixin):
            if m.bias is not None:
                params.append(m.bias)
            if weights:
                # Adam moves each weight by about lr per step: scale it to the layer's level spacing.
                scale = float(m.weight_quant.param.detach().abs().mean())
                weight_params.append((m.weight, max(scale, 1e-8)))
    seen: set[int] = set()
    unique = [p for p in params if not (id(p) in seen or seen.add(id(p)))]
    return unique, scales, weight_params
