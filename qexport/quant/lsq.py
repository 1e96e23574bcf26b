"""LSQ (Esser et al. 2019): learned step size, for activations and uniform weights."""
from __future__ import annotations

import torch

from .base import ActQuantizer, WeightQuantizer, register_act, register_weight


@register_act("lsq")
class LsqActQuantizer(ActQuantizer):
    """q = clamp(round(x / s), -Qn, Qp), x_hat = q s; the step s is learned (gradient scaled by
    1 / sqrt(features * Qp)). Exported as ``ai.qexport.LsqQuantize``."""


@register_weight("uniform")
class LsqWeightQuantizer(WeightQuantizer):
    """Uniform weights with a learned per-channel step: w_int in [-2^(b-1), 2^(b-1) - 1].

    Exported as ``QConv`` / ``QGemm`` (format uniform) with ``W_scale`` = the step.
    """

    param_name = "step"

    def qmax(self, bits: int) -> int:
        return max(1, 2 ** (bits - 1) - 1)

    def clamp_range(self, bits: int) -> tuple[float, float]:
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)

    def project(self, v: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        r = torch.round(v)
        return r, r.to(torch.int64)

    def integer_scale(self, bits: int) -> float:
        return 1.0
