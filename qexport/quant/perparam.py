"""Per-parameter precision (Khoram and Li, ICLR 2018): every weight has its own bit-width.

The quantizer holds a buffer ``widths`` (int8, the weight's shape): weight i is projected onto
the level set of width ``widths[i]`` of its format's family (``qexport/spec/codecs/perparam.py``;
0 = pruned), with a per-channel scale fixed at initialisation (STE through the projection). Who sets
the widths is ``qexport.nn.perparam`` (the closed-form margins); until then every weight has the
family's widest width ``B`` (= ``bits``), i.e. a plain B-bit quantizer.
"""
from __future__ import annotations

import numpy as np
import torch

from ..spec import codecs
from .base import WeightQuantizer, register_weight


class PerParamWeightQuantizer(WeightQuantizer):
    """Weights ``scale[o] * level / integer_scale`` with ``level`` on the width-``widths[i]`` grid."""

    param_name = "scale"

    def __init__(self, bits: int | list[int], out_channels: int) -> None:
        if len(set(np.atleast_1d(bits).tolist())) != 1:
            raise ValueError(f"{self.fmt} weights take one bit-width (the widest a parameter may have), "
                             f"got per-channel {list(np.atleast_1d(bits))}")
        super().__init__(bits, out_channels)
        self.codec = codecs.get(self.fmt)
        self.register_buffer("widths", torch.zeros(0, dtype=torch.int8))
        self._grids: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    # ----------------------------------------------------------------- the grids
    @property
    def top(self) -> int:
        return int(self.bits)

    def grid(self, b: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(magnitudes of the width-b levels in units of the top level, midpoints between them)."""
        key = (b, str(device))
        if key not in self._grids:
            mags = np.unique(np.abs(self.codec.width_levels(self.top, b))).astype(np.float64)
            lv = torch.tensor(mags / self.integer_scale(self.top), dtype=torch.float32, device=device)
            self._grids[key] = (lv, (lv[1:] + lv[:-1]) / 2)
        return self._grids[key]

    def qmax(self, bits: int) -> int:
        return len(self.grid(int(bits), torch.device("cpu"))[0]) - 1

    def clamp_range(self, bits: int) -> tuple[float, float]:
        return -1.0, 1.0

    def integer_scale(self, bits: int) -> float:
        return float(self.codec.weight_max(int(bits)))

    def project(self, v: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Projection at one width for every element (used by init_from: the widest grid)."""
        return self.project_widths(v, torch.full(v.shape, int(bits), dtype=torch.int8, device=v.device))

    def project_widths(self, v: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """v in [-1, 1] (units of the top level) -> (level, integer weight), element i at widths[i];
        nearest level by magnitude, ties to the smaller one."""
        level = torch.zeros_like(v)
        mag, sign = v.abs(), torch.sign(v)
        for b in torch.unique(widths).tolist():
            lv, mids = self.grid(int(b), v.device)
            at = widths == b
            level = torch.where(at, lv.to(v.dtype)[torch.bucketize(mag, mids.to(v.dtype))], level)
        level = sign * level
        w_int = torch.round(level * self.integer_scale(self.top)).to(torch.int64)
        return level, w_int

    def errors(self, w: torch.Tensor) -> dict[int, torch.Tensor]:
        """|w - Q_b(w)| (in the weight's units) of every element at every width of the family."""
        shape = (-1,) + (1,) * (w.dim() - 1)
        s = self.param.detach().reshape(shape)
        v = torch.clamp(w.detach() / s, -1.0, 1.0)
        out = {}
        for b in self.codec.widths(self.top):
            level, _ = self.project_widths(v, torch.full(v.shape, b, dtype=torch.int8, device=v.device))
            out[b] = (level * s - w.detach()).abs()
        return out

    # ----------------------------------------------------------------- state
    def current_widths(self, w: torch.Tensor) -> torch.Tensor:
        if self.widths.shape != w.shape:
            self.widths = torch.full(w.shape, self.top, dtype=torch.int8, device=w.device)
        return self.widths

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "widths"
        if key in state_dict:  # the shape is the weight's, known only from the checkpoint
            self.widths = torch.zeros_like(state_dict[key], dtype=torch.int8)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        if self.widths.numel() == 0:
            return f"{self.fmt}, bits<={self.top} (widths not set)"
        mean = float(self.widths.float().mean())
        pruned = float((self.widths == 0).float().mean())
        return f"{self.fmt}, bits<={self.top}, mean {mean:.2f} bits/weight, {100 * pruned:.1f}% pruned"

    # ----------------------------------------------------------------- forward / export
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized):
            self.init_from(w)
        widths = self.current_widths(w)
        shape = (-1,) + (1,) * (w.dim() - 1)
        # The scale is the B-bit grid's, fixed once initialised: learned, the gradient of the coarse
        # and pruned weights (level - v, large) would drag every weight's grid with them.
        s = self.param.detach().reshape(shape)
        v = torch.clamp(w / s, -1.0, 1.0)
        level, _ = self.project_widths(v.detach(), widths)
        return (v + (level - v).detach()) * s

    @torch.no_grad()
    def integer_weights(self, w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        w = w.detach().cpu()
        widths = self.current_widths(w).cpu()
        shape = (-1,) + (1,) * (w.dim() - 1)
        param = self.param.detach().cpu()
        _, w_int = self.project_widths(torch.clamp(w / param.reshape(shape), -1.0, 1.0), widths)
        w_scale = (param.double() / self.integer_scale(self.top)).float()
        return w_int.numpy().astype(np.int64), w_scale.numpy().astype(np.float32)


@register_weight("perparam")
class PerParamFixedQuantizer(PerParamWeightQuantizer):
    """Fixed point: a b-bit weight is a multiple of 2^(B-b) of the B-bit grid (codec perparam)."""


@register_weight("perparam_post")
class PerParamPostQuantizer(PerParamWeightQuantizer):
    """Powers of sqrt(2): a b-bit weight is on the b-bit POST table (codec perparam_post)."""
