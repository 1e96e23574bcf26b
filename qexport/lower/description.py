"""The typed description of an integer model: one ``LayerSpec`` per quantized layer.

Lowering (``qexport.lower.modules``) produces it from a quantized module tree; the exporter
writes it into the ONNX file (metadata ``qexport.bits``, JSON) together with where each layer
ended up in the graph (``OnnxBinding``: its weighted node, the codes tensor that node reads, its
packed-weight initializer); validate reads it back with ``IntegerModel.from_onnx`` instead of
reconstructing node names. Torch-free (json and onnx protos only).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

__all__ = ["QuantizerSpec", "OnnxBinding", "LayerSpec", "IntegerModel", "LAYERS_KEY"]

#: The metadata key of the description (named for its first content, the bit-widths).
LAYERS_KEY = "qexport.bits"


@dataclass(frozen=True)
class QuantizerSpec:
    """A layer's input quantizer (AsqQuantize / LsqQuantize)."""

    kind: str  # "lsq" | "asq"
    bits: int
    signed: bool


@dataclass(frozen=True)
class OnnxBinding:
    """Where a layer is in an exported graph (names of the graph's own nodes and tensors)."""

    node: str  # the weighted node: QConv / QGemm / QConvFused
    codes: str  # the uint8 codes it reads (its input X): a quantize node's output or a fused conv's Q
    weights: str  # the initializer of its packed weights (its input W)


@dataclass(frozen=True)
class LayerSpec:
    """One quantized layer of the integer model."""

    name: str  # module path in the PyTorch model
    kind: str  # "conv" | "gemm"
    op: str  # the ONNX op it lowers to (QConv, QGemm; a version-1 op in older files)
    weights: str  # weight codec (qexport.spec.codecs)
    bits: int | tuple[int, ...]  # weight bit-width: one, or one per output channel
    act: QuantizerSpec
    folded_bn: bool = False
    weight_shape: tuple[int, ...] | None = None  # None in files written before it was recorded
    onnx: OnnxBinding | None = None  # None before export (and in files written before bindings)

    @property
    def channel_bits(self) -> tuple[int, ...]:
        return self.bits if isinstance(self.bits, tuple) else (int(self.bits),)

    def to_json(self) -> dict:
        """The row of ``qexport.bits`` (the keys of the first format, then the newer ones)."""
        row = {"op": self.op, "weights": self.weights, "bits": list(self.bits) if isinstance(self.bits, tuple)
               else int(self.bits), "act": self.act.kind, "act_bits": self.act.bits,
               "act_signed": bool(self.act.signed), "folded_bn": bool(self.folded_bn), "kind": self.kind}
        if self.weight_shape is not None:
            row["weight_shape"] = list(self.weight_shape)
        if self.onnx is not None:
            row["onnx"] = asdict(self.onnx)
        return row

    @classmethod
    def from_json(cls, name: str, row: dict) -> "LayerSpec":
        bits = row["bits"]
        op = str(row["op"])
        kind = row.get("kind") or ("gemm" if op.endswith("Gemm") else "conv")
        return cls(name=name, kind=kind, op=op, weights=str(row["weights"]),
                   bits=tuple(int(b) for b in bits) if isinstance(bits, list) else int(bits),
                   act=QuantizerSpec(str(row["act"]), int(row["act_bits"]), bool(row.get("act_signed", False))),
                   folded_bn=bool(row.get("folded_bn", False)),
                   weight_shape=tuple(int(d) for d in row["weight_shape"]) if "weight_shape" in row else None,
                   onnx=OnnxBinding(**row["onnx"]) if "onnx" in row else None)


@dataclass
class IntegerModel:
    """The layers of an integer model, in module order."""

    layers: dict[str, LayerSpec] = field(default_factory=dict)

    def to_metadata(self) -> str:
        return json.dumps({name: spec.to_json() for name, spec in self.layers.items()}, sort_keys=True)

    def bind(self, graph) -> "IntegerModel":
        """The same layers with their ``OnnxBinding`` read from an exported graph whose weighted
        nodes are named ``<layer>/op`` (what the exporter names them before anything else runs)."""
        nodes = {n.name: n for n in graph.node}
        bound = {}
        for name, spec in self.layers.items():
            node = nodes.get(f"{name}/op")
            if node is None:
                raise ValueError(f"layer {name}: the graph has no weighted node {name}/op")
            w = 1 if node.op_type in ("ConvInteger", "MatMulInteger") else 2  # --format qdq: (x, w, x_zp, w_zp)
            bound[name] = replace(spec, onnx=OnnxBinding(node=node.name, codes=node.input[0], weights=node.input[w]))
        return IntegerModel(bound)

    @classmethod
    def from_onnx(cls, proto) -> "IntegerModel":
        """The description an exported model carries. Files written before bindings were recorded
        get them from the node names of that time (``<layer>/op``); a file without the metadata
        (not written by qexport) raises ValueError."""
        meta = {p.key: p.value for p in proto.metadata_props}
        if LAYERS_KEY not in meta:
            raise ValueError(f"the ONNX model has no '{LAYERS_KEY}' metadata: it was not exported by qexport")
        try:
            rows = json.loads(meta[LAYERS_KEY])
            model = cls({name: LayerSpec.from_json(name, row) for name, row in rows.items()})
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"the ONNX model's '{LAYERS_KEY}' metadata is malformed ({exc})") from None
        if any(spec.onnx is None for spec in model.layers.values()):
            model = model.bind(proto.graph)
        return model
