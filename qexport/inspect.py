"""``qexport inspect``: what a qexport ONNX file holds, layer by layer, without running it.

Reads the layer description the exporter writes (``qexport.lower.description``) and the graph's
initializers: per layer the op, weight codec, bit-widths (a histogram when they vary per
channel), parameters, packed bytes and the bytes of its scales, bias and ASQ adapter; totals and
the ratio to the same parameters in float32; the versions that wrote the file and whether the
installed library registers every op it uses. Torch-free.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from .lower.description import IntegerModel
from .spec import reference as R

__all__ = ["LayerInfo", "ModelInfo", "inspect_model"]


@dataclass
class LayerInfo:
    name: str
    op: str
    weights: str  # codec
    bits: dict[str, int]  # bit-width -> output channels at it
    act: str
    act_bits: int
    params: int  # weights + bias
    weight_bytes: int  # packed codes in the file
    other_bytes: int  # scales, bias, ASQ adapter (float32) in the file
    adapter_params: int = 0
    # per-parameter formats: bit-width -> weights that need it (0 = pruned), from the decoded W
    param_bits: dict[str, int] | None = None

    @property
    def mean_bits(self) -> float:
        hist = self.param_bits if self.param_bits is not None else self.bits
        total = sum(hist.values())
        return sum(int(b) * c for b, c in hist.items()) / total if total else 0.0

    @property
    def bits_text(self) -> str:
        """One width; or the mean and the histogram (per channel, or per weight for per-parameter formats)."""
        if self.param_bits is not None:
            total = sum(self.param_bits.values())
            return f"{self.mean_bits:.2f} avg per weight (" + ", ".join(
                f"{b}b {100 * c / total:.0f}%" for b, c in self.param_bits.items()) + ")"
        if len(self.bits) == 1:
            return next(iter(self.bits))
        return f"{self.mean_bits:.2f} avg (" + ", ".join(f"{c}x{b}" for b, c in self.bits.items()) + ")"


@dataclass
class ModelInfo:
    path: str
    file_bytes: int
    qexport_version: str | None
    method: str | None
    opset: dict[str, int]
    ops: dict[str, int]  # ai.qexport op type -> nodes
    missing_ops: list[str] | None  # ops the installed library does not register (None: no library)
    layers: list[LayerInfo] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        for row, layer in zip(d["layers"], self.layers):
            row["mean_bits"] = layer.mean_bits
        d["totals"] = self.totals()
        return d

    def totals(self) -> dict:
        params = sum(layer.params for layer in self.layers)
        weight_bytes = sum(layer.weight_bytes for layer in self.layers)
        other = sum(layer.other_bytes for layer in self.layers)
        return {"quantized_params": params, "weight_bytes": weight_bytes, "scale_bias_adapter_bytes": other,
                "float32_bytes_of_these_params": params * 4,
                "ratio_to_float": (params * 4) / max(1, weight_bytes + other),
                "adapter_params": sum(layer.adapter_params for layer in self.layers)}


def _numel(init: onnx.TensorProto) -> int:
    return int(np.prod(init.dims, dtype=np.int64)) if init.dims else 1


def _nbytes(init: onnx.TensorProto) -> int:
    return len(onnx.numpy_helper.to_array(init).tobytes())


def inspect_model(path: str | Path) -> ModelInfo:
    """Read ``path`` (a qexport .onnx) and describe it; ValueError for a file that is not a
    readable ONNX model or has no qexport layer description."""
    path = Path(path)
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf errors have many types
        raise ValueError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    description = IntegerModel.from_onnx(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    inits = {i.name: i for i in proto.graph.initializer}
    nodes = {n.name: n for n in proto.graph.node}
    ops = Counter(n.op_type for n in proto.graph.node if n.domain == R.DOMAIN)
    info = ModelInfo(str(path), path.stat().st_size, meta.get("qexport.version"), meta.get("qexport.method"),
                     {o.domain or "ai.onnx": o.version for o in proto.opset_import}, dict(sorted(ops.items())),
                     _missing_ops(set(ops)))
    order = {n.name: i for i, n in enumerate(proto.graph.node)}
    for name, spec in sorted(description.layers.items(), key=lambda kv: order.get(kv[1].onnx.node, -1)):
        node = nodes.get(spec.onnx.node)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute} if node is not None else {}
        shape = [int(d) for d in attrs.get("weight_shape", spec.weight_shape or [])]
        qdq = node is not None and node.domain != R.DOMAIN  # --format qdq: scales live in Mul/Add nodes
        used = [i for i in (list(node.input)[3:5] if node is not None and not qdq else []) if i in inits]  # W_scale, B
        weight = inits.get(spec.onnx.weights)
        adapter = _adapter_of(proto, spec.onnx.codes, inits)
        o = shape[0] if shape else 0
        per_channel = list(spec.channel_bits) * (o if len(spec.channel_bits) == 1 else 1)
        other = sum(_nbytes(inits[i]) for i in used)
        info.layers.append(LayerInfo(
            name=name, op=spec.op, weights=spec.weights,
            bits={str(b): c for b, c in sorted(Counter(per_channel).items())}, act=spec.act.kind,
            act_bits=spec.act.bits,
            params=int(np.prod(shape)) + o if shape else 0,
            weight_bytes=_nbytes(weight) if weight is not None else 0,
            other_bytes=other + sum(_nbytes(a) for a in adapter),
            adapter_params=sum(_numel(a) for a in adapter),
            param_bits=_param_bits(spec.weights, spec.channel_bits, shape, weight)))
    return info


def _param_bits(fmt: str, channel_bits, shape: list[int], weight: onnx.TensorProto | None) -> dict[str, int] | None:
    """Histogram of the bits each weight needs, for a per-parameter (variable-length) format."""
    from .spec import codecs

    codec = codecs.get(fmt) if fmt in R.WEIGHT_FORMATS else None
    if codec is None or not codec.variable_length or weight is None or not shape:
        return None
    try:
        w_int = R.decode_weights(onnx.numpy_helper.to_array(weight), fmt, list(channel_bits), shape)
    except ValueError as exc:
        raise ValueError(f"layer weights {weight.name!r} do not decode: {exc}") from None
    needed = codec.param_bits(w_int, int(max(channel_bits)))
    values, counts = np.unique(needed, return_counts=True)
    return {str(int(b)): int(c) for b, c in zip(values, counts)}


def _adapter_of(proto: onnx.ModelProto, codes: str, inits: dict) -> list[onnx.TensorProto]:
    """The ASQ adapter initializers of the quantizer producing ``codes``: an AsqQuantize node's
    inputs 1-4, or those of a fused conv whose output 1 (Q) they are (inputs 6-9)."""
    for n in proto.graph.node:
        if n.domain != R.DOMAIN:
            continue
        if n.op_type == "AsqQuantize" and codes in n.output:
            return [inits[i] for i in list(n.input)[1:5] if i in inits]
        if n.op_type.endswith("ConvFused") and len(n.output) > 1 and n.output[1] == codes:
            return [inits[i] for i in list(n.input)[6:10] if i in inits]
    return []


def _missing_ops(used: set[str]) -> list[str] | None:
    try:
        from .runtime import op_names

        have = set(op_names())
    except Exception:  # noqa: BLE001 - no library here: say so rather than fail
        return None
    return sorted(used - have)


def render_json(info: ModelInfo) -> str:
    return json.dumps(info.to_dict(), indent=2, sort_keys=True)
