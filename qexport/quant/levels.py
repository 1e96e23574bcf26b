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

    def __init__(self, bits: int | list[int], out_channels: int) -> None:
        super().__init__(bits, out_channels)
        self._tables: dict[tuple[int, str], tuple[torch.Tensor, ...]] = {}

    def _table(self, bits: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(integer levels, levels / max, midpoints) of a bit-width, cached per device."""
        key = (bits, str(device))
        if key not in self._tables:
            values, valid = R.weight_lut(self.fmt, bits)
            mags = sorted({abs(int(v)) for v, ok in zip(values, valid) if ok})
            ints = torch.tensor(mags, dtype=torch.int64, device=device)
            levels = ints.float() / float(mags[-1])
            self._tables[key] = (ints, levels, (levels[1:] + levels[:-1]) / 2)
        return self._tables[key]

    def qmax(self, bits: int) -> int:
        return len(self._table(bits, torch.device("cpu"))[0]) - 1

    def clamp_range(self, bits: int) -> tuple[float, float]:
        return -1.0, 1.0

    def project(self, v: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        ints, levels, mids = self._table(bits, v.device)
        idx = torch.bucketize(v.abs(), mids.to(v.dtype))
        sign = torch.sign(v)
        return sign * levels.to(v.dtype)[idx], sign.to(torch.int64) * ints[idx]

    def level(self, v: torch.Tensor, bits: int) -> torch.Tensor:
        _, levels, mids = self._table(bits, v.device)
        return torch.sign(v) * levels.to(v.dtype)[torch.bucketize(v.abs(), mids.to(v.dtype))]

    def integer_scale(self, bits: int) -> float:
        return float(self._table(bits, torch.device("cpu"))[0][-1])
