"""Adaptive quantization (Khoram and Li, ICLR 2018): a bit-width for every weight, in closed form.

The method (docs/perparam.md has the derivation and every choice the paper leaves open):

1. Sensitivities: ``g_i``, the root-mean-square over mini-batches of dL/dw_i (at a trained model
   the full-batch gradient is ~0 and its sign noise; the paper's "loss gradient" is read as its
   typical magnitude per batch).
2. Margins: minimising the total bits ``sum_i log2(|w_i| / tau_i)`` subject to the first-order loss
   increase ``sum_i g_i tau_i <= eps`` gives ``tau_i = eps / (N g_i)``: every weight gets the same
   share of the loss budget, so insensitive weights get wide margins.
3. Widths: ``b_i`` = the smallest width of the format's family whose level set has a level within
   ``tau_i`` of ``w_i`` (exact, not the log2 estimate; 0 bits = pruned when ``|w_i| <= tau_i``).
4. Iterate: short retraining at those widths, then the next round with ``eps`` times ``growth``,
   while the accuracy on held-out training samples stays within ``tolerance`` points of the
   reference (the float model's; the widest-width start's when that already misses it). A round
   that misses by less than ``recover_within`` (default 3 x tolerance) gets one more retraining
   (the same steps at half the rate) before it is judged; a round that still breaks it is undone
   (one retry halfway, in log scale) and the loop stops.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..quant.perparam import PerParamWeightQuantizer
from ..spec import reference as R
from ..spec import codecs
from ..spec.codecs import rans

__all__ = ["perparam_layers", "sensitivities", "assign", "layer_stats", "totals", "adapt"]


def perparam_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The quantized layers of ``model`` whose weights have per-parameter widths, by name."""
    from .swap import quant_layers

    return {n: m for n, m in quant_layers(model).items() if isinstance(m.weight_quant, PerParamWeightQuantizer)}


def _batches(n: int, batch_size: int, count: int, gen: torch.Generator):
    for _ in range(count):
        yield torch.randint(0, n, (batch_size,), generator=gen)


def sensitivities(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batches: int = 16, batch_size: int = 128,
                  seed: int = 0) -> dict[str, torch.Tensor]:
    """g_i: RMS over ``batches`` random mini-batches of the loss gradient wrt each quantized weight
    (the quantizer's output: a latent weight beyond the clipping range has no gradient of its own,
    yet it is one of the largest, least prunable weights)."""
    layers = perparam_layers(model)
    acc = {n: torch.zeros_like(m.weight) for n, m in layers.items()}

    def hook(name: str):
        def on_forward(_mod, _inp, out):
            if out.requires_grad:
                out.register_hook(lambda g: acc[name].add_(g.detach() ** 2))
        return on_forward

    handles = [m.weight_quant.register_forward_hook(hook(n)) for n, m in layers.items()]
    was = model.training
    model.eval()  # batch statistics and dropout off: the gradient of the deployed function
    gen = torch.Generator().manual_seed(seed)
    try:
        for idx in _batches(len(x), batch_size, batches, gen):
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was)
    return {n: (a / batches).sqrt() for n, a in acc.items()}


@torch.no_grad()
def _widths_for(layers: dict[str, nn.Module], sens: dict[str, torch.Tensor], eps: float,
                errors: dict[str, dict[int, torch.Tensor]]) -> dict[str, torch.Tensor]:
    n_total = sum(m.weight.numel() for m in layers.values())
    out = {}
    for name, m in layers.items():
        q = m.weight_quant
        tau = eps / (n_total * sens[name].clamp_min(1e-30))
        widths = torch.full(m.weight.shape, q.top, dtype=torch.int8, device=m.weight.device)
        done = torch.zeros(m.weight.shape, dtype=torch.bool, device=m.weight.device)
        for b in q.codec.widths(q.top):  # ascending: the first width within the margin wins
            ok = ~done & (errors[name][b] <= tau)
            widths[ok] = b
            done |= ok
        out[name] = widths
    return out


@torch.no_grad()
def assign(model: nn.Module, sens: dict[str, torch.Tensor], eps: float) -> dict[str, torch.Tensor]:
    """Sets every per-parameter layer's widths for the loss budget ``eps``; returns them."""
    layers = perparam_layers(model)
    errors = {n: m.weight_quant.errors(m.weight) for n, m in layers.items()}
    widths = _widths_for(layers, sens, eps, errors)
    for n, m in layers.items():
        m.weight_quant.widths = widths[n]
    return widths


@torch.no_grad()
def eps_for_mean_width(model: nn.Module, sens: dict[str, torch.Tensor], target: float) -> float:
    """The loss budget whose widths average ``target`` bits per weight (bisection in log eps)."""
    layers = perparam_layers(model)
    errors = {n: m.weight_quant.errors(m.weight) for n, m in layers.items()}
    n_total = sum(m.weight.numel() for m in layers.values())

    def mean(eps: float) -> float:
        w = _widths_for(layers, sens, eps, errors)
        return sum(float(v.double().sum()) for v in w.values()) / n_total

    lo, hi = -40.0, 20.0  # log2(eps): widths are all B at 2^-40, all 0 at 2^20 (loss >> any margin)
    for _ in range(40):
        mid = (lo + hi) / 2
        if mean(2.0**mid) > target:
            lo = mid
        else:
            hi = mid
    return 2.0**hi


@torch.no_grad()
def layer_stats(model: nn.Module) -> dict[str, dict]:
    """Per per-parameter layer: mean bits, pruned fraction, histogram of bits per parameter (of the
    integer weights the exporter writes: the width each value needs), and the bytes of three
    encodings of its weights: the entropy-coded stream the file holds, the fixed-width B-bit
    stream, and "widths then codes" at its entropy bound (sum of widths + H(width) per weight)."""
    out = {}
    for name, m in perparam_layers(model).items():
        q = m.weight_quant
        w_int, _ = q.integer_weights(m.weight)
        needed = q.codec.param_bits(w_int, q.top)
        values, counts = np.unique(needed, return_counts=True)
        hist = {int(b): int(c) for b, c in zip(values, counts)}
        widths_then_codes = (float(needed.sum()) + rans.ideal_bits(needed)) / 8
        stream = R.pack_weights(w_int, q.fmt, q.top)
        out[name] = {"format": q.fmt, "top_bits": q.top, "weights": int(w_int.size),
                     "mean_bits": float(needed.mean()), "pruned": float((w_int == 0).mean()),
                     "bits_histogram": hist, "stream_bytes": int(stream.size),
                     "fixed_width_bytes": codecs.fixed_width_length(np.array([q.top]), w_int.size),
                     "widths_then_codes_bytes": int(math.ceil(widths_then_codes)),
                     "entropy_bytes": int(math.ceil(rans.ideal_bits(w_int) / 8))}
    return out


def totals(stats: dict[str, dict]) -> dict:
    """The model's figures from ``layer_stats``: weights, mean bits and pruned share (weighted by
    the layers' sizes), and every byte count summed."""
    n = sum(s["weights"] for s in stats.values())
    out = {"weights": n, "mean_bits": sum(s["mean_bits"] * s["weights"] for s in stats.values()) / max(1, n),
           "pruned": sum(s["pruned"] * s["weights"] for s in stats.values()) / max(1, n)}
    for key in ("stream_bytes", "fixed_width_bytes", "widths_then_codes_bytes", "entropy_bytes"):
        out[key] = sum(s[key] for s in stats.values())
    return out


def _finetune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, batch_size: int,
              gen: torch.Generator) -> float:
    from ..train.loop import lr_factor

    # Cosine to 0 within the round: the round ends settled, so its accuracy is the widths', not a
    # point mid-way through SGD's noise at a constant rate.
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    model.train()
    total = 0.0
    for step, idx in enumerate(_batches(len(x), batch_size, steps, gen)):
        for group in opt.param_groups:
            group["lr"] = lr * lr_factor("cosine", step, steps)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        total += float(loss.detach())
    model.eval()
    return total / max(1, steps)


def adapt(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, *,
          rounds: int = 10, steps: int = 200, tolerance: float = 0.5, reference_acc: float | None = None,
          growth: float = 4.0, lr: float = 0.01, batch_size: int = 128, sens_batches: int = 16, seed: int = 0,
          recover_within: float | None = None,
          log: Callable[[str], None] = lambda s: None) -> dict:
    """Khoram and Li's iteration on a model quantized with a per-parameter method (widths all ``B``
    at the start). Leaves the model at the last accepted round; returns the rounds' record."""
    from ..train.loop import evaluate

    recover_within = 3 * tolerance if recover_within is None else recover_within
    layers = perparam_layers(model)
    if not layers:
        raise ValueError("adapt needs a model quantized with a per-parameter method (lsq+perparam, asq+perparam_post, ...)")
    if rounds < 1 or steps < 0 or tolerance < 0 or growth <= 1:
        raise ValueError("rounds must be >= 1, steps >= 0, tolerance >= 0 and growth > 1")
    gen = torch.Generator().manual_seed(seed)

    def val_acc() -> float:
        return float(evaluate(model, x_val.cpu().numpy(), y_val.cpu().numpy()))

    t0 = time.perf_counter()
    model.eval()
    loss = _finetune(model, x_train, y_train, steps, lr, batch_size, gen)  # recover from calibration at B bits
    acc0 = val_acc()
    ref = acc0 if reference_acc is None else float(reference_acc)
    if acc0 < ref - tolerance:  # no round could pass: hold them to the start instead (and say so)
        log(f"note: the {acc0:.2f}% of the widest-width start is already more than {tolerance:.2f} points below "
            f"the reference {ref:.2f}%; the rounds are held to the start's accuracy instead")
        record_ref_note = ref
        ref = acc0
    else:
        record_ref_note = None
    record = {"reference_acc": ref, "float_reference_acc": record_ref_note, "tolerance": tolerance, "growth": growth, "steps": steps,
              "start": {"val_acc": acc0, "train_loss": loss, **totals(layer_stats(model))}, "rounds": []}
    log(f"per-parameter precision: start {acc0:.2f}% (reference {ref:.2f}%, tolerance {tolerance:.2f} points)")
    top = max(m.weight_quant.top for m in layers.values())
    accepted = copy.deepcopy(model.state_dict())
    sens = sensitivities(model, x_train, y_train, sens_batches, batch_size, seed)
    eps = eps_for_mean_width(model, sens, top - 2.0 if top > 4 else top - 1.0)
    last_ok: float | None = None
    failed: float | None = None  # the smallest budget that broke the tolerance
    retried = False
    r = 0
    while r < rounds:
        r += 1
        assign(model, sens, eps)
        loss = _finetune(model, x_train, y_train, steps, lr, batch_size, gen)
        acc = val_acc()
        ok = acc >= ref - tolerance
        extra = 0
        if not ok and acc >= ref - recover_within:  # close: one more retraining before judging
            loss = _finetune(model, x_train, y_train, steps, lr / 2, batch_size, gen)
            acc, extra = val_acc(), steps
            ok = acc >= ref - tolerance
        row = {"round": r, "eps": eps, "val_acc": acc, "train_loss": loss, "accepted": ok, "extra_steps": extra,
               **totals(layer_stats(model))}
        record["rounds"].append(row)
        log(f"round {r}: eps {eps:.3g}, {row['mean_bits']:.2f} bits/weight, {100 * row['pruned']:.1f}% pruned, "
            f"{row['stream_bytes']} B of codes, val {acc:.2f}% -> {'kept' if ok else 'undone'}")
        if ok:
            accepted, last_ok, retried = copy.deepcopy(model.state_dict()), eps, False
            eps *= growth
            if failed is not None and eps >= failed:  # never again at or beyond a budget that broke it
                eps = math.sqrt(last_ok * failed)
                if eps < 1.1 * last_ok:
                    break
        else:
            model.load_state_dict(accepted)
            failed = eps if failed is None else min(failed, eps)
            if retried:
                break
            # one more try halfway (log scale) to the last kept budget, or a step back before any
            eps, retried = (math.sqrt(last_ok * eps) if last_ok is not None else eps / growth), True
        sens = sensitivities(model, x_train, y_train, sens_batches, batch_size, seed + r)
    model.eval()
    final = layer_stats(model)
    record.update(final=totals(final), layers=final, val_acc=val_acc(), time_s=time.perf_counter() - t0)
    return record
