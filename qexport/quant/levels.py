"""Shared machinery of the logarithmic weight grids (POT and POST): sign + magnitude level."""
from __future__ import annotations

import torch

from ..spec import reference as R
from .base import WeightQuantizer


class LevelWeightQuantizer(WeightQuantizer):
    """Weights on alpha * {0, +-L_1 .. +-L_M} with L_m = int_level[m] / int_level[M].

    Projection is to the nearest level in the linear domain (ties go to the smaller level);
    w > alpha clips to the top level. alpha is per output channel and learned with LSQ's rule
    (STE through the projection; gradient scaled by 1 / sqrt(weights per channel * M)).
    """

    param_name = "alpha"

    def __init__(self, bits: int, out_channels: int) -> None:
        super().__init__(bits, out_channels)
        values, valid = R.weight_lut(self.fmt, bits)
        mags = sorted({abs(int(v)) for v, ok in zip(values, valid) if ok})
        ints = torch.tensor(mags, dtype=torch.int64)
        self.register_buffer("int_levels", ints, persistent=False)
        levels = ints.float() / float(mags[-1])
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("mids", (levels[1:] + levels[:-1]) / 2, persistent=False)

    def qmax(self) -> int:
        return self.levels.numel() - 1

    def clamp_range(self) -> tuple[float, float]:
        return -1.0, 1.0

    def project(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.bucketize(v.abs(), self.mids.to(v.dtype))
        sign = torch.sign(v)
        return sign * self.levels.to(v.dtype)[idx], sign.to(torch.int64) * self.int_levels[idx]

    def integer_scale(self) -> float:
        return float(self.int_levels[-1])
