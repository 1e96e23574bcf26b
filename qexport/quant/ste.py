"""Straight-through helpers (as in lsq-net): a value unchanged forward, a chosen gradient backward."""
from __future__ import annotations

import torch


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Return x unchanged, with its gradient multiplied by ``scale`` (LSQ's g)."""
    y = x * scale
    return (x - y).detach() + y


def round_pass(x: torch.Tensor) -> torch.Tensor:
    """Round half to even forward; identity gradient (the STE)."""
    return (torch.round(x) - x).detach() + x


class _FakeQuant(torch.autograd.Function):
    """``round(clamp(x / s, lo, hi)) * s`` with LSQ's gradients, in one node: d/dx is 1 where
    ``lo <= x/s <= hi`` (else 0), d/ds is ``round(x/s) - x/s`` inside and ``lo``/``hi``
    outside. The same values and gradients as ``round_pass(torch.clamp(x / s, lo, hi)) * s``
    (round_pass's forward ``(round(c) - c) + c`` equals ``round(c)`` exactly: the difference is
    exact and the sum is an integer), with two saved tensors instead of five and in-place
    forward passes: the fake quantization of a 224x224 network's activations is memory-bound."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, s: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        ctx.save_for_backward(x, s)
        ctx.bounds = (lo, hi)
        return torch.div(x, s).clamp_(lo, hi).round_().mul_(s)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, s = ctx.saved_tensors
        lo, hi = ctx.bounds
        u = torch.div(x, s)
        inside = (u >= lo) & (u <= hi)
        grad_x = grad * inside if ctx.needs_input_grad[0] else None
        grad_s = None
        if ctx.needs_input_grad[1]:
            # inside: round(u) - u; outside: the clamped bound (round of it is itself)
            d = torch.where(inside, torch.round(u) - u, u.clamp_(lo, hi))
            grad_s = grad * d
            grad_s = grad_s.sum() if s.dim() == 0 else grad_s.sum_to_size(s.shape)
        return grad_x, grad_s, None, None


def fake_quant(x: torch.Tensor, s: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """``round(clamp(x / s, lo, hi)) * s`` (half to even) with the STE/LSQ gradients (``_FakeQuant``);
    ``s`` a scalar tensor or broadcastable per sample."""
    return _FakeQuant.apply(x, s, lo, hi)
