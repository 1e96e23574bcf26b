"""QuantConfig: what to quantize and how, as one serialisable dataclass."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..spec import reference as R
from .base import ACT_QUANTIZERS, WEIGHT_QUANTIZERS

METHODS = ("lsq", "asq", "lsq+pot", "lsq+post", "asq+pot", "asq+post")


@dataclass(frozen=True)
class QuantConfig:
    """How :func:`qexport.nn.quantize_` quantizes a model.

    Args:
        method: ``"<activations>[+<weights>]"``: activations ``lsq`` or ``asq``; weights
            ``pot`` or ``post``, uniform LSQ weights when omitted (``"asq"`` is the paper's
            scheme 1, ``"asq+post"`` its scheme 2).
        bits: weight bit-width of the body layers (POT/POST: 2..4, uniform: 2..8).
        act_bits: activation bit-width of the body layers (default: ``bits``).
        first_last_bits: the first and the last Conv2d/Linear (in registration order) use
            uniform LSQ weights and LSQ activations at this width (the papers' 8-bit setup);
            ``None`` quantizes them like the body.
        adapter_reduction: ASQ adapter hidden width is ``G // adapter_reduction`` (1..16) for its
            ``G = min(C, adapter_groups)`` channel-group inputs (the authors' C/4 when C <= 64).
        adapter: the ASQ adapter's output map: ``"relu"`` (the authors' form, beta = max(z, 1e-8),
            beta near 1 at the start) or ``"sigmoid2"`` (qexport's first form, beta = 2 sigmoid(z);
            what checkpoints written before this field existed hold).
        adapter_groups: at most this many channel groups feed the adapter (bounds its size).
        skip: module names (as in ``model.named_modules()``) left in float.

    Example:
        >>> cfg = QuantConfig(method="asq+post", bits=4)
        >>> model = quantize_(build_model("small_cnn"), cfg)
    """

    method: str = "asq+post"
    bits: int = 4
    act_bits: int | None = None
    first_last_bits: int | None = 8
    adapter_reduction: int = 4
    adapter: str = "relu"
    adapter_groups: int = 64
    skip: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "skip", tuple(self.skip))
        act, _, weights = self.method.partition("+")
        if act not in ACT_QUANTIZERS:
            raise ValueError(f"unknown method {self.method!r}: activations must be one of {sorted(ACT_QUANTIZERS)}; methods: {', '.join(METHODS)}")
        wfmt = weights or "uniform"
        if wfmt not in WEIGHT_QUANTIZERS or wfmt == "uniform" and weights:
            raise ValueError(f"unknown method {self.method!r}: weights must be 'pot' or 'post' (or omitted for uniform LSQ weights); methods: {', '.join(METHODS)}")
        allowed = R.WEIGHT_BITS[wfmt]
        if self.bits not in allowed:
            hint = " (POT/POST are defined for 2..4 bits; use --method lsq or asq for uniform weights at 5..8 bits)" if wfmt != "uniform" else ""
            raise ValueError(f"{wfmt} weights support {allowed.start}..{allowed.stop - 1} bits, got {self.bits}{hint}")
        if self.effective_act_bits not in R.ACT_BITS:
            raise ValueError(f"activation bits must be in 2..8, got {self.effective_act_bits}")
        if self.first_last_bits is not None and self.first_last_bits not in R.ACT_BITS:
            raise ValueError(f"first_last_bits must be in 2..8 or None, got {self.first_last_bits}")
        if self.adapter_reduction < 1 or self.adapter_groups < 1:
            raise ValueError("adapter_reduction and adapter_groups must be >= 1")
        if self.adapter not in R.BETA_MAPS:
            raise ValueError(f"adapter must be one of {R.BETA_MAPS}, got {self.adapter!r}")

    @property
    def act_method(self) -> str:
        return self.method.partition("+")[0]

    @property
    def weight_format(self) -> str:
        return self.method.partition("+")[2] or "uniform"

    @property
    def effective_act_bits(self) -> int:
        return self.bits if self.act_bits is None else self.act_bits

    def to_dict(self) -> dict:
        d = asdict(self)
        d["skip"] = list(self.skip)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "QuantConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown QuantConfig fields {sorted(unknown)}")
        if "adapter" not in d:  # written before the field existed: qexport's first adapter form
            d = {**d, "adapter": "sigmoid2", "adapter_reduction": d.get("adapter_reduction", 16)}
        return cls(**d)
