"""QuantConfig: what to quantize and how, as one serialisable dataclass."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from fnmatch import fnmatchcase
from typing import Any

from ..spec import reference as R
from .base import ACT_QUANTIZERS, WEIGHT_QUANTIZERS

METHODS = ("lsq", "asq", "lsq+pot", "lsq+post", "asq+pot", "asq+post",
           "lsq+perparam", "asq+perparam", "lsq+perparam_post", "asq+perparam_post")


@dataclass(frozen=True)
class QuantConfig:
    """How :func:`qexport.nn.quantize_` quantizes a model.

    Args:
        method: ``"<activations>[+<weights>]"``: activations ``lsq`` or ``asq``; weights
            ``pot`` or ``post``, uniform LSQ weights when omitted (``"asq"`` is the paper's
            scheme 1, ``"asq+post"`` its scheme 2); ``perparam`` / ``perparam_post``: a
            bit-width per weight (Khoram and Li; set by ``qexport.nn.perparam.adapt``), ``bits``
            the widest.
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
        overrides: per-layer settings, ``[(pattern, {key: value}), ...]``: every Conv2d/Linear
            whose module name matches ``pattern`` (``fnmatch``: ``*``, ``?``, ``[...]``; an exact
            name matches itself) takes these keys instead of the defaults above: ``method``,
            ``bits`` (an int, or a list with one bit-width per output channel: mixed precision),
            ``act_bits`` (follows an int ``bits`` unless given here or in the config), or
            ``skip: True`` (stays float). Matching overrides apply in order, later ones win, and
            they win over the first/last-layer rule. Like torchao's ModuleFqnToConfig.

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
    overrides: tuple[tuple[str, dict], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "skip", tuple(self.skip))
        items = self.overrides.items() if isinstance(self.overrides, dict) else self.overrides
        object.__setattr__(self, "overrides", tuple((str(p), _check_override(str(p), dict(o))) for p, o in items))
        act, _, weights = self.method.partition("+")
        if act not in ACT_QUANTIZERS:
            raise ValueError(f"unknown method {self.method!r}: activations must be one of {sorted(ACT_QUANTIZERS)}; methods: {', '.join(METHODS)}")
        wfmt = weights or "uniform"
        if wfmt not in WEIGHT_QUANTIZERS or wfmt == "uniform" and weights:
            raise ValueError(f"unknown method {self.method!r}: weights must be 'pot', 'post', 'perparam' or 'perparam_post' (or omitted for uniform LSQ weights); methods: {', '.join(METHODS)}")
        allowed = R.WEIGHT_BITS[wfmt]
        if self.bits not in allowed:
            hint = {"uniform": "", "perparam": "",
                    "perparam_post": " (the widest POST table has 4 bits; lsq+perparam takes fixed point up to 8)"}.get(
                wfmt, " (POT/POST are defined for 2..4 bits; use --method lsq or asq for uniform weights at 5..8 bits)")
            raise ValueError(f"{wfmt} weights support {allowed.start}..{allowed.stop - 1} bits, got {self.bits}{hint}")
        if self.effective_act_bits not in R.ACT_BITS:
            raise ValueError(f"activation bits must be in 2..8, got {self.effective_act_bits}")
        if self.first_last_bits is not None and self.first_last_bits not in R.ACT_BITS:
            raise ValueError(f"first_last_bits must be in 2..8 or None, got {self.first_last_bits}")
        if self.adapter_reduction < 1 or self.adapter_groups < 1:
            raise ValueError("adapter_reduction and adapter_groups must be >= 1")
        if self.adapter not in R.BETA_MAPS:
            raise ValueError(f"adapter must be one of {R.BETA_MAPS}, got {self.adapter!r}")

    def layer_spec(self, name: str, edge: bool) -> dict[str, Any] | None:
        """The settings of the layer called ``name`` (``edge``: it is the first or the last one):
        {"act", "weights", "bits", "act_bits"}, or None when it stays float."""
        if name in self.skip:
            return None
        flb = self.first_last_bits if edge else None
        spec = {"act": "lsq" if flb else self.act_method, "weights": "uniform" if flb else self.weight_format,
                "bits": flb or self.bits, "act_bits": flb or self.effective_act_bits}
        for pattern, o in self.overrides:
            if not fnmatchcase(name, pattern):
                continue
            if o.get("skip"):
                return None
            if "method" in o:
                act, _, weights = o["method"].partition("+")
                spec["act"], spec["weights"] = act, weights or "uniform"
            if "bits" in o:
                spec["bits"] = o["bits"]
                if "act_bits" not in o and self.act_bits is None and isinstance(o["bits"], int):
                    spec["act_bits"] = o["bits"]
            if "act_bits" in o:
                spec["act_bits"] = o["act_bits"]
        allowed = R.WEIGHT_BITS[spec["weights"]]
        bad = [b for b in (spec["bits"] if isinstance(spec["bits"], list) else [spec["bits"]]) if b not in allowed]
        if bad:
            raise ValueError(f"layer {name!r}: {spec['weights']} weights support {allowed.start}..{allowed.stop - 1} bits, "
                             f"got {bad[0]} (from the overrides that match it: "
                             f"{[p for p, _ in self.overrides if fnmatchcase(name, p)] or 'none'})")
        return spec

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
        d["overrides"] = [[p, dict(o)] for p, o in self.overrides]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "QuantConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown QuantConfig fields {sorted(unknown)}")
        if isinstance(d.get("overrides"), list):
            d = {**d, "overrides": tuple((p, o) for p, o in d["overrides"])}
        if "adapter" not in d:  # written before the field existed: qexport's first adapter form
            d = {**d, "adapter": "sigmoid2", "adapter_reduction": d.get("adapter_reduction", 16)}
        return cls(**d)


OVERRIDE_KEYS = ("method", "bits", "act_bits", "skip")


def _check_override(pattern: str, o: dict) -> dict:
    """Validate one override's keys and values (bit ranges per format are checked per layer)."""
    unknown = set(o) - set(OVERRIDE_KEYS)
    if unknown:
        raise ValueError(f"override {pattern!r}: unknown keys {sorted(unknown)}; use {', '.join(OVERRIDE_KEYS)}")
    if "method" in o:
        act, _, weights = str(o["method"]).partition("+")
        if act not in ACT_QUANTIZERS or (weights and weights not in WEIGHT_QUANTIZERS) or weights == "uniform":
            raise ValueError(f"override {pattern!r}: unknown method {o['method']!r}; methods: {', '.join(METHODS)}")
    def bit_width(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v in R.ACT_BITS

    if "act_bits" in o and not bit_width(o["act_bits"]):
        raise ValueError(f"override {pattern!r}: act_bits must be an integer in 2..8, got {o['act_bits']!r}")
    if "bits" in o:  # one bit-width, or a list: one per output channel (mixed precision)
        if isinstance(o["bits"], (list, tuple)) and o["bits"] and all(bit_width(b) for b in o["bits"]):
            o["bits"] = [int(b) for b in o["bits"]]
        elif not bit_width(o["bits"]):
            raise ValueError(f"override {pattern!r}: bits must be an integer in 2..8 or a list of them (one per "
                             f"output channel), got {o['bits']!r}")
    if "skip" in o and not isinstance(o["skip"], bool):
        raise ValueError(f"override {pattern!r}: skip must be true or false, got {o['skip']!r}")
    return o


def parse_override(text: str) -> tuple[str, dict]:
    """``"PATTERN:key=value,key=value"`` or ``"PATTERN:skip"`` (the CLI's ``--override``) ->
    (pattern, {key: value}). Example: ``"features.4.*:bits=8,method=lsq"``."""
    pattern, sep, body = text.partition(":")
    if not sep or not pattern or not body:
        raise ValueError(f"--override {text!r}: expected PATTERN:key=value[,key=value] or PATTERN:skip, "
                         f"e.g. 'features.4.*:bits=8' or 'fc:skip'")
    o: dict = {}
    for item in body.split(","):
        key, eq, value = (s.strip() for s in item.partition("="))
        if key == "skip" and not eq:
            o["skip"] = True
        elif key in ("bits", "act_bits") and eq and value.isdigit():
            o[key] = int(value)
        elif key == "method" and eq:
            o[key] = "".join(value.split()).lower()
        else:
            raise ValueError(f"--override {text!r}: cannot read {item!r}; keys: bits=N, act_bits=N, method=M, skip")
    return pattern, _check_override(pattern, o)
