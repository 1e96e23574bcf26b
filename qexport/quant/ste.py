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
