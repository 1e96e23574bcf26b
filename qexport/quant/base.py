"""Quantizer base classes and the registries that map method names to quantizers.

A quantizer is registered once with a decorator; configs, layers, calibration and the
exporter look it up by name, so adding a method touches one file and no if/elif chain.
"""
from __future__ import annotations

import math
from typing import Callable, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from ..spec import reference as R

ACT_QUANTIZERS: dict[str, type["ActQuantizer"]] = {}
WEIGHT_QUANTIZERS: dict[str, type["WeightQuantizer"]] = {}

A = TypeVar("A", bound=type)


def _registrar(registry: dict, attr: str, name: str) -> Callable[[A], A]:
    def deco(cls: A) -> A:
        setattr(cls, attr, name)
        registry[name] = cls
        return cls
    return deco


def register_act(name: str) -> Callable[[A], A]:
    """Class decorator: an activation quantizer known to configs and the exporter as ``name``."""
    return _registrar(ACT_QUANTIZERS, "kind", name)


def register_weight(name: str) -> Callable[[A], A]:
    """Class decorator: a weight quantizer (weight format) known as ``name``."""
    return _registrar(WEIGHT_QUANTIZERS, "fmt", name)


# Calibration keeps at most this many activation values per quantizer (a uniform subsample).
_CALIB_VALUES = 1 << 16


class ActQuantizer(nn.Module):
    """Activation quantizer with a learned step size ``step`` (LSQ) and optional per-sample factor.

    ``signed`` is a buffer: -1 means "decide from the first data seen" (min < 0 -> signed).
    Subclasses provide ``factor(x)``, the per-sample multiplier of the step (1 for LSQ).
    """

    kind: ClassVar[str]

    def __init__(self, bits: int, channels: int, signed: bool | None = None) -> None:
        super().__init__()
        R.act_range(bits, False)  # validates bits
        self.bits = int(bits)
        self.channels = int(channels)
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("signed", torch.tensor(-1 if signed is None else int(signed), dtype=torch.int8))
        self.register_buffer("initialized", torch.tensor(False))
        self.calibrating = False
        self.enabled = True  # False: identity (the float model, used while calibrating)
        self._calib: list[torch.Tensor] = []
        self._calib_min = math.inf

    # ----------------------------------------------------------------- helpers
    @property
    def is_signed(self) -> bool:
        if int(self.signed) < 0:
            raise RuntimeError("quantizer has not seen data yet: call qexport.nn.calibrate(model, batches) first")
        return bool(int(self.signed))

    def qrange(self) -> tuple[int, int]:
        return R.act_range(self.bits, self.is_signed)

    def factor(self, x: torch.Tensor) -> torch.Tensor | None:
        """Per-sample multiplier of the step, shape (N,), or None for a fixed step."""
        return None

    def extra_repr(self) -> str:
        sign = {-1: "auto", 0: "unsigned", 1: "signed"}[int(self.signed)]
        return f"bits={self.bits}, {sign}, step={float(self.step.detach()):.4g}"

    # ----------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self._observe(x)
            return x
        if not self.enabled:
            return x
        if not bool(self.initialized):
            self._init_from_batch(x)
        lo, hi = self.qrange()
        if torch.is_grad_enabled():
            g = 1.0 / math.sqrt(max(1, x[0].numel()) * max(1, hi))
            s = grad_scale(self.step, g)
        else:  # no gradient: the step itself (grad_scale's forward may differ from it in the last bit)
            s = self.step
        return fake_quant(x, self._per_sample(s, x), lo, hi)

    def _per_sample(self, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The step ``s`` times the per-sample factor, shaped to broadcast over ``x``. LSQ's g
        scales the step's own gradient only: the factor gets the full gradient (grad wrt s'
        times s), as in the ASQ authors' code."""
        f = self.factor(x)
        return s if f is None else s * f.reshape((-1,) + (1,) * (x.dim() - 1))

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The integer codes (zero point added, as float) this quantizer gives ``x`` in eval:
        what ``forward`` outputs divided by its step."""
        lo, hi = self.qrange()
        q = torch.div(x, self._per_sample(self.step, x)).clamp_(lo, hi).round_()
        return q.add_(R.act_zero_point(self.bits, self.is_signed))

    # ----------------------------------------------------------------- init / calibration
    @torch.no_grad()
    def _init_from_batch(self, x: torch.Tensor) -> None:
        """LSQ's initialisation when training starts without calibration: 2 mean|x| / sqrt(Qp)."""
        if int(self.signed) < 0:
            self.signed.fill_(int(bool((x < 0).any())))
        _, hi = self.qrange()
        self.step.fill_(max(2.0 * x.abs().mean().item() / math.sqrt(hi), 1e-8))
        self.initialized.fill_(True)

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1).float()
        self._calib_min = min(self._calib_min, float(flat.min()))
        if flat.numel() > _CALIB_VALUES // 4:
            idx = torch.randint(0, flat.numel(), (_CALIB_VALUES // 4,), generator=torch.Generator().manual_seed(len(self._calib)))
            flat = flat[idx]
        self._calib.append(flat.cpu())

    @torch.no_grad()
    def finish_calibration(self) -> None:
        """Pick signedness and the MSE-optimal step over the observed values."""
        self.calibrating = False
        if not self._calib:
            return
        values = torch.cat(self._calib)[:_CALIB_VALUES]
        self._calib = []
        if int(self.signed) < 0:
            self.signed.fill_(int(self._calib_min < 0))
        lo, hi = self.qrange()
        self.step.fill_(mse_step(values, lo, hi))
        self.initialized.fill_(True)

    def deploy_params(self) -> dict:
        """What the exporter needs: kind, bits, signed, step (float32-exact) and adapter arrays."""
        return {"kind": self.kind, "bits": self.bits, "signed": self.is_signed,
                "step": float(np.float32(self.step.detach().item()))}


def mse_step(values: torch.Tensor, lo: int, hi: int, points: int = 40) -> float:
    """Step minimising the mean squared quantization error of ``values``: a coarse grid of
    clipping ratios of max|x|, then a finer grid around the best one."""
    amax = float(values.abs().max())
    if not math.isfinite(amax) or amax <= 0:
        return 1.0
    top = max(abs(lo), hi)

    def err(t: float) -> float:
        s = amax * t / top
        return float(((torch.clamp(torch.round(values / s), lo, hi) * s - values) ** 2).mean())

    grid = torch.linspace(0.02, 1.0, points).tolist()
    best = min(grid, key=err)
    width = grid[1] - grid[0]
    best = min(torch.linspace(max(0.005, best - width), min(1.0, best + width), points // 2).tolist() + [best], key=err)
    return amax * best / top


# Weights per row that weight-scale initialisation measures the error on (evenly spaced, see
# WeightQuantizer.init_from).
INIT_COLUMNS = 8192


class WeightQuantizer(nn.Module):
    """Per-output-channel weight quantizer. Subclasses define the integer grid of a bit-width.

    ``bits`` is one bit-width, or one per output channel (mixed precision: Cheng et al.'s
    fine-grained assignment; every channel keeps its own learned scale, on its own grid).
    ``integer_weights(w)`` returns (w_int, w_scale) with ``forward(w) == w_int * w_scale``
    (up to one float32 rounding): the exporter packs ``w_int`` and the kernels use ``w_scale``.
    """

    fmt: ClassVar[str]
    param_name: ClassVar[str] = "scale"

    def __init__(self, bits: int | list[int], out_channels: int) -> None:
        super().__init__()
        per_channel = [int(b) for b in np.atleast_1d(np.asarray(bits))]
        if len(per_channel) not in (1, out_channels):
            raise ValueError(f"bits must be one integer or {out_channels} (one per output channel), got {len(per_channel)}")
        for b in sorted(set(per_channel)):
            R.weight_lut(self.fmt, b)  # validates (format, bits)
        self.channel_bits = per_channel * out_channels if len(per_channel) == 1 else per_channel
        self.bits: int | list[int] = per_channel[0] if len(set(self.channel_bits)) == 1 else list(self.channel_bits)
        self.register_parameter(self.param_name, nn.Parameter(torch.ones(out_channels)))
        self.register_buffer("initialized", torch.tensor(False))

    @property
    def param(self) -> nn.Parameter:
        return getattr(self, self.param_name)

    @property
    def mixed(self) -> bool:
        return not isinstance(self.bits, int)

    def extra_repr(self) -> str:
        bits = self.bits if not self.mixed else f"{min(self.channel_bits)}..{max(self.channel_bits)} per channel"
        return f"{self.fmt}, bits={bits}, channels={self.param.numel()}"

    def groups(self, device: torch.device) -> list[tuple[int, torch.Tensor | None]]:
        """(bit-width, output channels with it): [(bits, None)] (every channel) when not mixed."""
        if not self.mixed:
            return [(int(self.bits), None)]
        b = torch.tensor(self.channel_bits)
        return [(int(v), torch.nonzero(b == v).flatten().to(device)) for v in torch.unique(b).tolist()]

    def grad_factor(self, w: torch.Tensor, bits: int) -> float:
        return 1.0 / math.sqrt(max(1, w[0].numel()) * self.qmax(bits))

    def qmax(self, bits: int) -> int:
        """Number of positive levels (LSQ's Qp), used for gradient scaling."""
        raise NotImplementedError

    def project(self, v: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        """v = w / scale (clamped to the grid's range) -> (level value, integer weight)."""
        raise NotImplementedError

    def level(self, v: torch.Tensor, bits: int) -> torch.Tensor:
        """The level value of ``project`` alone (what the forward pass needs)."""
        return self.project(v, bits)[0]

    def clamp_range(self, bits: int) -> tuple[float, float]:
        raise NotImplementedError

    def integer_scale(self, bits: int) -> float:
        """Map from the grid's level value to the kernel's integer weight: w_scale = param / this."""
        raise NotImplementedError

    def _quantize_rows(self, w: torch.Tensor, s: torch.Tensor, bits: int) -> torch.Tensor:
        lo, hi = self.clamp_range(bits)
        shape = (-1,) + (1,) * (w.dim() - 1)
        s = grad_scale(s, self.grad_factor(w, bits)).reshape(shape)
        v = torch.clamp(w / s, lo, hi)
        level = self.level(v.detach(), bits)
        return (v + (level - v).detach()) * s

    def _cache_key(self, w: torch.Tensor) -> tuple:
        """Changes whenever the quantized weight could: the latent weight, this quantizer's
        parameters and buffers (in place or replaced) and its bit-widths. The cache holds the
        tensors themselves too, so that a replaced one cannot free its id for a newcomer."""
        tensors = (w, *self.parameters(), *self.buffers())
        state = tuple((id(t), t._version, t.data_ptr()) for t in tensors)
        return (state, tuple(self.channel_bits))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or not bool(self.initialized):
            self._cached = None
            return self._forward(w)
        # Without gradients (calibration passes, evaluation, parity) the same weights are
        # quantized batch after batch: keep the result until something it depends on changes.
        key = self._cache_key(w)
        cached = getattr(self, "_cached", None)
        if cached is None or cached[0] != key:
            cached = (key, self._forward(w), (w, *self.parameters(), *self.buffers()))
            self._cached = cached
        return cached[1]

    def _forward(self, w: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized):
            self.init_from(w)
        groups = self.groups(w.device)
        if len(groups) == 1 and groups[0][1] is None:
            return self._quantize_rows(w, self.param, groups[0][0])
        out = torch.empty_like(w)
        for bits, rows in groups:
            out = out.index_put((rows,), self._quantize_rows(w[rows], self.param[rows], bits))
        return out

    @torch.no_grad()
    def integer_weights(self, w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        w_int = torch.zeros(w.shape, dtype=torch.int64)
        w_scale = torch.zeros(w.shape[0], dtype=torch.float32)
        shape = (-1,) + (1,) * (w.dim() - 1)
        for bits, rows in self.groups(torch.device("cpu")):
            rows = torch.arange(w.shape[0]) if rows is None else rows
            lo, hi = self.clamp_range(bits)
            param = self.param.detach().cpu()[rows]
            v = torch.clamp(w.detach().cpu()[rows] / param.reshape(shape), lo, hi)
            _, w_int[rows] = self.project(v, bits)
            w_scale[rows] = (param.double() / float(self.integer_scale(bits))).float()
        return w_int.numpy().astype(np.int64), w_scale.numpy().astype(np.float32)

    @torch.no_grad()
    def init_from(self, w: torch.Tensor, points: int = 40) -> None:
        """Per-channel MSE-optimal scale over a grid of clipping ratios of max|w|, on each
        channel's own grid. A row of more than ``INIT_COLUMNS`` weights measures the error on
        that many evenly spaced ones (its max|w| on all of them): VGG's 25,088-input classifier
        took 135 s of its convert's calibration, 35 s so; the full-row error of the scales found
        was 0.3% above the full search's on average (3.9% at most, 256 random rows). Every conv
        of the zoo's networks has fewer weights per row."""
        flat_all = w.detach().reshape(w.shape[0], -1).float()
        amax_all = flat_all.abs().amax(dim=1).clamp_min(1e-12)
        if flat_all.shape[1] > INIT_COLUMNS:
            flat_all = flat_all[:, torch.linspace(0, flat_all.shape[1] - 1, INIT_COLUMNS).long()]
        # Rows in chunks of ~4M weights: a grid point's temporaries are a few copies of the chunk
        # (VGG11's 102M-weight classifier in one piece peaked at gigabytes).
        chunk = max(1, (4 << 20) // max(1, flat_all.shape[1]))
        for bits, rows in self.groups(w.device):
            rows = torch.arange(w.shape[0], device=w.device) if rows is None else rows
            lo, hi = self.clamp_range(bits)
            for part in torch.split(rows, chunk):
                flat = flat_all[part]
                amax = amax_all[part]
                best = amax / hi
                best_err = torch.full_like(amax, math.inf)
                for t in torch.linspace(0.2, 1.0, points).tolist():
                    s = amax * t / hi
                    level = self.level(torch.clamp(flat / s[:, None], lo, hi), bits)
                    err = ((level * s[:, None] - flat) ** 2).mean(dim=1)
                    better = err < best_err
                    best = torch.where(better, s, best)
                    best_err = torch.where(better, err, best_err)
                self.param[part] = best.to(self.param.dtype)
        self.initialized.fill_(True)


from .ste import fake_quant, grad_scale  # noqa: E402  (kept at the end: base defines the registries)
