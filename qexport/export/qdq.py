"""Standard-ONNX export (``--format qdq``): a uniform LSQ model as a graph of plain ONNX ops.

For devices that cannot load qexport's custom-op library: the model runs in a plain
``onnxruntime.InferenceSession`` (or any ONNX runtime with the integer ops) and computes, code
for code, what the deploy model and the ``ai.qexport`` export compute (the numpy definition in
:mod:`qexport.spec.reference`). Only models whose every quantized layer has LSQ activations and
uniform weights (method ``lsq``) qualify: ASQ's per-sample step needs its adapter and POT/POST
weights their own kernels, so those are refused with the offending layer named.

How each ``ai.qexport`` node of the (unfused) export is lowered, and why it is exact:

* ``LsqQuantize`` -> ``QuantizeLinear(x, step, zero_point)`` to **uint8** with qexport's own zero
  point (0 unsigned, 2^(b-1) signed), then, below 8 bits, ``Clip`` on the codes to
  ``[lo + zp, hi + zp]``. ONNX Runtime's QuantizeLinear divides by the scale and rounds half to
  even, like the reference's ``clamp(rint(x / step), lo, hi) + zp`` (checked on millions of values
  and on thousands of near-ties where ``x * (1 / step)`` would round differently). Clipping the
  *codes* is exact by construction: clamping an integer after rounding is what the reference
  does, and QuantizeLinear's saturation to 0..255 only clamps further out. A ``Clip`` on the
  float input instead would need ``(hi * step) / step`` to round back to ``hi``, which holds in
  practice but is not guaranteed, so it is not used. The codes are the very bytes the
  ``ai.qexport`` model produces, so they can be compared layer by layer.
* ``UniformConv`` / ``UniformGemm`` (or ``QConv`` / ``QGemm``) -> ``ConvInteger`` /
  ``MatMulInteger`` of the uint8 codes (x_zero_point = the quantizer's zero point, so padded
  positions contribute 0, as in the reference) with the integer weights w (-128..127: every
  uniform level of 2..8 bits) stored in 8 bits as uint8 ``w + 128`` with w_zero_point 128, giving
  the exact int32 accumulator. Not int8 with zero point 0: ONNX Runtime runs u8 x s8 products on
  AVX2 CPUs without VNNI with ``vpmaddubsw``, whose int16 pair sums saturate (why its quantizer
  has ``reduce_range``), while u8 x u8 is exact on every CPU; and its u8 x s8 ConvInteger took
  4.4x as long as u8 x u8 here (a 3x3 conv, 32 -> 32 channels, 28x28, batch 64). Then the
  reference's float32 epilogue as separate ops: ``Cast`` to float, ``Mul`` by
  ``float32(step) * W_scale[o]`` (the reference's ``x_scale[n] * w_scale[o]``: an LSQ step is the
  same for every sample, so the product is a constant) and ``Add`` of the bias (BatchNorm folded
  in), each one IEEE float32 operation. Export refuses a layer whose worst-case accumulator
  could exceed int32.
* ``GlobalAvgPool`` -> its defined float64 summation order (8 sequential lanes, then a halving
  reduction, one division, a cast to float32) spelled out with ``Cast``/``Pad``/``Gather``/``Add``
  /``Div``, so the pooled features, and the codes of the quantizer after them, are identical.
  Beyond ``MAX_POOL_BLOCKS`` blocks of 8 positions (a graph of that many Adds) a float64
  ``ReduceSum`` is used instead: identical whenever its float64 sums are exact (float32 values
  whose magnitudes span well under 2^29 / positions), and otherwise different only when the
  float64 mean lies within a few float64 roundings of a float32 rounding boundary (rare).

Why not the other standard forms:

* ``DequantizeLinear`` (codes and weights) around a float ``Conv``/``Gemm``: the float32
  convolution sums in ONNX Runtime's order (which depends on the CPU and the kernel), not the
  integer accumulator's, so outputs differ in the last bits and the next quantizer's codes flip
  now and then. Worse, ONNX Runtime's QDQ optimizer rewrites ``DQ -> Conv -> Q`` into
  ``QLinearConv`` at its default optimization level, so the numerics would depend on the
  session options.
* ``QLinearConv`` / ``QLinearMatMul``: they requantize the accumulator to 8 bits with one
  combined multiplier (``round(acc * x_s * w_s / y_s) + y_zp``), a different rounding from the
  reference's float epilogue followed by the next layer's quantizer, and their output cannot
  feed float ops (the residual Add, the pooling, the classifier logits) without another
  approximation.

Known difference: a NaN input to a quantizer gives code 0 in ONNX Runtime's QuantizeLinear
where the reference gives the zero point (only signed quantizers, whose zero point is not 0,
are affected). ONNX Runtime's default graph optimizations leave this graph's numerics alone
(checked: the same outputs with every optimization disabled).
"""
from __future__ import annotations

import json
import os
from typing import Callable

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from .. import __version__
from ..io import atomic_write_bytes
from ..lower.modules import DeployQuantize, deploy_layers, to_deploy
from ..nn.layers import QuantMixin
from ..spec import reference as R
from .exporter import ExportError, _module_of, trace_deploy
from ..lower.ops import OPS

__all__ = ["FORMATS", "QdqError", "qdq_incompatibilities", "check_qdq_compatible", "export_qdq",
           "check_qdq_parity", "weight_tensor", "WEIGHT_ZERO_POINT", "layer_codes_tensors", "plain_session",
           "MAX_POOL_BLOCKS"]

#: The export formats: "qexport" (ai.qexport custom ops, every method) and "qdq" (this module).
FORMATS = ("qexport", "qdq")

#: GlobalAvgPool over more than this many blocks of 8 positions uses a float64 ReduceSum.
MAX_POOL_BLOCKS = 256

INT32_MAX = 2**31 - 1

#: Integer weights w (-128..127 for every uniform width) are stored as uint8 w + 128 with this
#: zero point: ONNX Runtime's u8 x u8 integer kernels are exact everywhere (module docstring).
WEIGHT_ZERO_POINT = 128


class QdqError(ExportError):
    """The model cannot be exported as standard ONNX (the message names the layer and why)."""


def _codes_name(layer: str) -> str:
    """Name of the tensor of the codes of ``layer``'s quantizer (layer_codes_tensors: which layers read it)."""
    return f"{layer}/codes"


def weight_tensor(layer: str) -> str:
    """Name of the uint8 initializer holding ``layer``'s integer weights plus WEIGHT_ZERO_POINT in
    a qdq model (conv: (O, C/group, kH, kW); gemm: (K, O), MatMulInteger's layout)."""
    return f"{layer}.weight_u8"


# --------------------------------------------------------------------------- which models qualify
def _layer_kinds(model: nn.Module) -> dict[str, tuple[str, str]]:
    """{layer: (activation method, weight format)} of a QAT/calibrated or a deploy model."""
    deploy = deploy_layers(model)
    if deploy:
        return {name: (layer.quant.kind, layer.fmt) for name, layer in deploy.items()}
    return {name: (m.act_quant.kind, m.weight_quant.fmt) for name, m in model.named_modules() if isinstance(m, QuantMixin)}


def qdq_incompatibilities(model: nn.Module) -> dict[str, str]:
    """{layer: what standard ONNX cannot express in it} (empty: the model qualifies)."""
    problems = {}
    from ..nn.layers import QConv1d

    for name, (act, fmt) in _layer_kinds(model).items():
        why = [f"{act.upper()} activations"] if act != "lsq" else []
        why += ["a Conv1d (the qdq lowering handles Conv2d and Linear)"] if isinstance(model.get_submodule(name), QConv1d) else []
        why += [f"{fmt.upper()} weights"] if fmt != "uniform" else []
        if why:
            problems[name] = " and ".join(why)
    return problems


def check_qdq_compatible(model: nn.Module) -> None:
    """Raise :class:`QdqError` naming the layers that keep the model from the qdq format."""
    if not _layer_kinds(model):
        raise QdqError("the model has no quantized layers: quantize and calibrate it first")
    problems = qdq_incompatibilities(model)
    if not problems:
        return
    groups: dict[str, list[str]] = {}
    for name, why in problems.items():
        groups.setdefault(why, []).append(name)
    parts = []
    for why, names in groups.items():
        shown = ", ".join(repr(n) for n in names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        parts.append(f"layer{'s' if len(names) > 1 else ''} {shown} {'have' if len(names) > 1 else 'has'} {why}")
    raise QdqError(
        f"--format qdq (standard ONNX) supports only LSQ activations with uniform weights (method lsq) in every "
        f"quantized layer: {'; '.join(parts)} (standard ONNX has no op for ASQ's per-sample step or for POT/POST's "
        f"logarithmic weight grid). Export this model with the default format (--format qexport: the ai.qexport "
        f"custom ops, run with the qexport library), or quantize it with --method lsq.")


# --------------------------------------------------------------------------- graph building
class _Builder:
    """Collects the nodes and initializers that replace one ai.qexport node."""

    def __init__(self, taken: set[str]) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.taken = taken

    def const(self, name: str, value: np.ndarray) -> str:
        if name in self.taken:
            raise QdqError(f"tensor name {name!r} already exists in the exported graph")
        self.taken.add(name)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        return output


def _quantize(b: _Builder, layer: str, q: DeployQuantize, x: str) -> str:
    """QuantizeLinear (+ Clip below 8 bits) -> uint8 codes named _codes_name(layer)."""
    lo, hi = R.act_range(q.bits, bool(q.signed))
    zp = int(q.zero_point)
    out = _codes_name(layer)
    step = np.float32(q.step)
    if not (np.isfinite(step) and step > 0):
        raise QdqError(f"layer {layer!r}: the activation step {q.step} is not finite and > 0")
    inputs = [x, b.const(f"{layer}.act_step", np.array(step, np.float32)),
              b.const(f"{layer}.act_zero_point", np.array(zp, np.uint8))]
    if (lo + zp, hi + zp) == (0, 255):  # 8 bits: QuantizeLinear's saturation is the clamp
        return b.node("QuantizeLinear", inputs, out, f"{layer}/quantize")
    raw = b.node("QuantizeLinear", inputs, f"{layer}/quantized", f"{layer}/quantize")
    return b.node("Clip", [raw, b.const(f"{layer}.code_min", np.array(lo + zp, np.uint8)),
                           b.const(f"{layer}.code_max", np.array(hi + zp, np.uint8))], out, f"{layer}/clip")


def _integer_weights(name: str, layer: nn.Module) -> np.ndarray:
    """The layer's integer weights (int64), checked to fit 8 bits."""
    w = R.decode_weights(layer.packed.numpy(), layer.fmt, layer.bits, layer.weight_shape).astype(np.int64)
    if w.min(initial=0) < -128 or w.max(initial=0) > 127:
        raise QdqError(f"layer {name!r}: integer weights do not fit 8 bits")
    return w


def _weighted(b: _Builder, name: str, layer: nn.Module, codes: str, out: str) -> None:
    """ConvInteger / MatMulInteger of the codes, then the float32 epilogue, into ``out``."""
    w = _integer_weights(name, layer)
    q = layer.quant
    amax = max(int(q.zero_point), 2 ** q.bits - 1 - int(q.zero_point))
    bound = amax * int(np.abs(w).reshape(w.shape[0], -1).sum(axis=1).max(initial=0))
    if bound > INT32_MAX:
        raise QdqError(f"layer {name!r}: its accumulator can reach {bound:,}, beyond ConvInteger/MatMulInteger's "
                       f"int32; export it with --format qexport (int64 accumulation)")
    o = w.shape[0]
    mult = (np.float32(q.step) * layer.w_scale.numpy().astype(np.float32)).astype(np.float32)
    bias = layer.bias.numpy().astype(np.float32)
    xzp = b.const(f"{name}.x_zero_point", np.array(int(q.zero_point), np.uint8))
    wzp = b.const(f"{name}.w_zero_point", np.array(WEIGHT_ZERO_POINT, np.uint8))
    stored = (w + WEIGHT_ZERO_POINT).astype(np.uint8)
    if layer.kind == "conv":
        shape = (1, o, 1, 1)
        acc = b.node("ConvInteger", [codes, b.const(weight_tensor(name), stored), xzp, wzp], f"{name}/acc", f"{name}/op",
                     kernel_shape=[int(k) for k in w.shape[2:]], strides=list(layer.strides), pads=list(layer.pads),
                     dilations=list(layer.dilations), group=int(layer.group))
    else:
        shape = (o,)
        acc = b.node("MatMulInteger", [codes, b.const(weight_tensor(name), np.ascontiguousarray(stored.T)), xzp, wzp],
                     f"{name}/acc", f"{name}/op")
    accf = b.node("Cast", [acc], f"{name}/acc_float", f"{name}/cast", to=TensorProto.FLOAT)
    scaled = b.node("Mul", [accf, b.const(f"{name}.out_scale", mult.reshape(shape))], f"{name}/scaled", f"{name}/scale")
    if int(getattr(layer, "relu", 0)):
        y = b.node("Add", [scaled, b.const(f"{name}.out_bias", bias.reshape(shape))], f"{name}/biased", f"{name}/bias")
        b.node("Relu", [y], out, f"{name}/relu")
    else:
        b.node("Add", [scaled, b.const(f"{name}.out_bias", bias.reshape(shape))], out, f"{name}/bias")


def _global_avg_pool(b: _Builder, name: str, x: str, shape: list, out: str) -> None:
    """reference.global_avg_pool in standard ops: float64 lanes, the defined order, float32 out."""
    if len(shape) < 3 or any(not isinstance(d, int) or d < 1 for d in shape[1:]):
        raise QdqError(f"{name}: GlobalAvgPool needs static channel and spatial sizes, got {shape}")
    rank, s = len(shape), int(np.prod(shape[2:]))
    lanes = R.MEAN_LANES
    blocks = -(-s // lanes)
    p = name.replace("/", ".")
    xd = b.node("Cast", [x], f"{name}/x64", f"{name}/cast64", to=TensorProto.DOUBLE)
    flat = b.node("Reshape", [xd, b.const(f"{p}.flat_shape", np.array([0, 0, s], np.int64))], f"{name}/flat",
                  f"{name}/flatten")
    if blocks > MAX_POOL_BLOCKS:
        total = b.node("ReduceSum", [flat, b.const(f"{p}.axes", np.array([2], np.int64))], f"{name}/sum",
                       f"{name}/sum", keepdims=1)
    else:
        if blocks * lanes != s:
            flat = b.node("Pad", [flat, b.const(f"{p}.pads", np.array([0, 0, 0, 0, 0, blocks * lanes - s], np.int64)),
                                  b.const(f"{p}.pad_value", np.array(0.0, np.float64))], f"{name}/padded", f"{name}/pad")
        grid = b.node("Reshape", [flat, b.const(f"{p}.block_shape", np.array([0, 0, blocks, lanes], np.int64))],
                      f"{name}/blocks", f"{name}/blocks")
        # lane j = (((+0.0 + x[j]) + x[j + 8]) + ...): one Add per block, in order
        acc = b.const(f"{p}.zero", np.zeros((1, 1, lanes), np.float64))
        for k in range(blocks):
            blk = b.node("Gather", [grid, b.const(f"{p}.block{k}", np.array(k, np.int64))], f"{name}/block{k}",
                         f"{name}/block{k}", axis=2)
            acc = b.node("Add", [acc, blk], f"{name}/lanes{k}", f"{name}/lanes{k}")
        # ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)): the halving reduction of 8 lanes
        width = lanes
        while width > 1:
            width //= 2
            lo = b.node("Gather", [acc, b.const(f"{p}.lo{width}", np.arange(width, dtype=np.int64))],
                        f"{name}/lo{width}", f"{name}/lo{width}", axis=2)
            hi = b.node("Gather", [acc, b.const(f"{p}.hi{width}", np.arange(width, 2 * width, dtype=np.int64))],
                        f"{name}/hi{width}", f"{name}/hi{width}", axis=2)
            acc = b.node("Add", [lo, hi], f"{name}/half{width}", f"{name}/half{width}")
        total = acc
    mean = b.node("Div", [total, b.const(f"{p}.count", np.array(float(s), np.float64))], f"{name}/mean64",
                  f"{name}/mean")
    mean32 = b.node("Cast", [mean], f"{name}/mean32", f"{name}/cast32", to=TensorProto.FLOAT)
    b.node("Reshape", [mean32, b.const(f"{p}.out_shape", np.array([0, 0] + [1] * (rank - 2), np.int64))], out,
           f"{name}/pool")


def _shapes(proto: onnx.ModelProto) -> dict[str, list]:
    shapes = {}
    for v in list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output):
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
            shapes[v.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                              for d in v.type.tensor_type.shape.dim]
    return shapes


def _lower(proto: onnx.ModelProto, deploy: nn.Module) -> None:
    """Replace every ai.qexport node of the dynamo export by standard ops, in place.

    Each node is attributed to the module that emitted it (its scope metadata), not to its name:
    two quantizers with the same input and the same parameters (a block's first conv and its
    projection shortcut, calibrated on the same tensor) are one node after the exporter's common
    subexpression elimination, and both layers then read its codes.
    """
    graph = proto.graph
    layers = deploy_layers(deploy)
    shapes = _shapes(proto)
    names = {i.name for i in graph.initializer} | {v for n in graph.node for v in n.output} | {i.name for i in graph.input}
    b = _Builder(names)
    codes: dict[str, str] = {}  # the ai.qexport quantize node's codes output -> our codes tensor
    new_nodes: list[onnx.NodeProto] = []
    pools = 0
    for node in graph.node:
        if node.domain != R.DOMAIN:
            new_nodes.append(node)
            continue
        kind = OPS[node.op_type].kind if node.op_type in OPS else None
        b.nodes = []
        if kind == "pool":
            name = _module_of(node, (".DeployGlobalAvgPool",)) or f"pool{pools}"
            pools += 1
            _global_avg_pool(b, f"{name}/pool", node.input[0], shapes.get(node.input[0], []), node.output[0])
        elif kind == "activation":
            # Standard ONNX has no op with the defined float64 computation: the float Sigmoid of the
            # runtime (its last bits may differ from PyTorch's, so parity may report code mismatches).
            base = node.name or f"act{pools}"
            sig = node.output[0] if node.op_type == "Sigmoid" else f"{node.output[0]}/sigmoid"
            b.node("Sigmoid", [node.input[0]], sig, f"{base}/sigmoid")
            if node.op_type == "Silu":
                b.node("Mul", [node.input[0], sig], node.output[0], f"{base}/mul")
        elif kind in ("quantize", "conv", "gemm"):
            layer = _module_of(node, (".DeployConv2d", ".DeployConv1d", ".DeployLinear"))
            if layer not in layers:
                raise QdqError(f"cannot tell which layer emitted node {node.name} ({node.op_type})")
            if kind == "quantize":
                codes[node.output[0]] = _quantize(b, layer, layers[layer].quant, node.input[0])
            elif node.input[0] not in codes:
                raise QdqError(f"layer {layer!r}: its {node.op_type} does not read an activation quantizer's codes")
            else:
                _weighted(b, layer, layers[layer], codes[node.input[0]], node.output[0])
        else:
            raise QdqError(f"cannot express {R.DOMAIN} node {node.name} ({node.op_type}) in standard ONNX")
        new_nodes.extend(b.nodes)
    missing = sorted(set(layers) - {n.name[: -len("/op")] for n in new_nodes if n.name.endswith("/op")})
    if missing:
        raise QdqError(f"layers {missing} were not found in the exported graph")
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(b.inits)
    # the quantizers' per-sample scale outputs and the packed weights are not read any more
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    produced = {o for n in graph.node for o in n.output}
    keep_vi = [v for v in graph.value_info if v.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(keep_vi)
    for node in graph.node:  # scopes and stack traces (local file paths) are dropped, as export_onnx does
        del node.metadata_props[:]
    opsets = [o for o in proto.opset_import if o.domain != R.DOMAIN]
    del proto.opset_import[:]
    proto.opset_import.extend(opsets)
    odd = sorted({f"{n.domain}.{n.op_type}" for n in graph.node if n.domain not in ("", "ai.onnx")})
    if odd:
        raise QdqError(f"the lowered graph still holds non-standard nodes: {', '.join(odd)}")


def export_qdq(model: nn.Module, path: str | os.PathLike | None, example_input: torch.Tensor, *,
               meta: dict[str, str] | None = None) -> onnx.ModelProto:
    """Export a uniform LSQ model (QAT/calibrated, or already a deploy model) as standard ONNX.

    Args:
        model: every quantized layer must have LSQ activations and uniform weights; anything
            else raises :class:`QdqError` naming the layers (export those with ``export_onnx``).
        path: where to write the .onnx (atomically); None only returns the proto.
        example_input: an input batch in the model's own convention (the batch dimension is
            exported as dynamic, "batch").
        meta: extra ``metadata_props`` (qexport.method, qexport.source, ...).

    Returns the checked ModelProto: QuantizeLinear/Clip, ConvInteger/MatMulInteger, Cast, Mul,
    Add and the model's own float ops; it runs in a plain ``onnxruntime.InferenceSession``.
    Node ``<layer>/op`` is each layer's ConvInteger/MatMulInteger (its input 0: the layer's
    codes; its input 1: the integer weights + 128, uint8 ``<layer>.weight_u8``). See the module docstring for
    why this form is exact.

    Example:
        >>> proto = export_qdq(model, "w4_qdq.onnx", torch.from_numpy(x[:2]))
    """
    check_qdq_compatible(model)
    deploy, proto = trace_deploy(model, example_input, QdqError)
    _lower(proto, deploy)
    proto.producer_name = "qexport"
    proto.producer_version = __version__
    proto.doc_string = ("Quantized by qexport; standard ONNX ops only (QuantizeLinear, ConvInteger, MatMulInteger), "
                        "format qdq: runs without the qexport library (docs/design.md).")
    layers = deploy_layers(deploy)
    bits = {name: {**layer.describe(), "op": "ConvInteger" if layer.kind == "conv" else "MatMulInteger"}
            for name, layer in layers.items()}
    entries = {**dict(meta or {}), "qexport.version": __version__, "qexport.format": "qdq",
               "qexport.bits": json.dumps(bits, sort_keys=True, default=_jsonable)}
    del proto.metadata_props[:]
    del proto.graph.metadata_props[:]  # the torch exporter's graph_signature: unused, kilobytes
    for key in sorted(entries):
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=str(entries[key])))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise QdqError(f"the standard-ONNX graph does not check: {exc}") from exc
    if path is not None:
        atomic_write_bytes(path, proto.SerializeToString(deterministic=True))
    return proto


def _jsonable(value):
    """numpy values in describe() rows (per-channel bits) as plain JSON."""
    return value.tolist() if isinstance(value, np.ndarray) else int(value) if isinstance(value, np.integer) else str(value)


def layer_codes_tensors(proto: onnx.ModelProto) -> dict[str, str]:
    """{layer: the tensor of its activation codes} of a qdq model: input 0 of node ``<layer>/op``."""
    return {n.name[: -len("/op")]: n.input[0] for n in proto.graph.node
            if n.name.endswith("/op") and n.op_type in ("ConvInteger", "MatMulInteger")}


# --------------------------------------------------------------------------- parity
def plain_session(model: bytes | str | os.PathLike, threads: int | None = None):
    """A plain ``onnxruntime.InferenceSession`` (CPU, no custom-op library registered)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    source = model if isinstance(model, (bytes, bytearray)) else os.fspath(model)
    return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])


@torch.no_grad()
def check_qdq_parity(model: nn.Module, proto: onnx.ModelProto, x: np.ndarray, y: np.ndarray | None = None, *,
                     tolerances=None, batch_size: int | None = None, threads: int | None = None,
                     session_factory: Callable[[bytes], object] | None = None,
                     progress: Callable[[int], None] | None = None):
    """Parity of a qdq model run by a plain ONNX Runtime session (no qexport library) with the
    quantized PyTorch model: every layer's codes and integer weights against the deploy model,
    the output against the deploy model and the trained (fake-quantized) model. Returns a
    :class:`qexport.validate.ParityReport`, judged by the same tolerances as ``check_parity``."""
    from ..inputs import bind_inputs
    from ..validate.parity import LayerParity, Tolerances, compare_runs, make_report, parity_batch_size

    if len(x) == 0:
        raise ValueError("no samples to compare: x is empty, and parity on zero samples proves nothing")
    tol = tolerances or Tolerances()
    model = model.eval()
    x = bind_inputs(model, x)  # several inputs: in the model's order (InputError names what is missing)
    if batch_size is None:
        batch_size = parity_batch_size(model, x)
    deploy = model if deploy_layers(model) else to_deploy(model)
    layers = deploy_layers(deploy)
    inits = {i.name: i for i in proto.graph.initializer}
    rows: dict[str, LayerParity] = {}
    for name, layer in layers.items():
        rows[name] = LayerParity(name, "ConvInteger" if layer.kind == "conv" else "MatMulInteger", layer.fmt,
                                 int(np.max(layer.bits)), layer.quant.kind, int(layer.quant.bits))
        init = inits.get(weight_tensor(name))
        if init is None:
            rows[name].weight_mismatches = -1
            continue
        theirs = numpy_helper.to_array(init).astype(np.int64) - WEIGHT_ZERO_POINT
        ours = R.decode_weights(layer.packed.numpy(), layer.fmt, layer.bits, layer.weight_shape)
        if layer.kind != "conv":
            theirs = theirs.T
        rows[name].weight_mismatches = ours.size if theirs.shape != ours.shape else int((ours != theirs).sum())

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    have = {o.name for o in probe.graph.output}
    code_names = layer_codes_tensors(proto)
    for name in layers:
        if name not in code_names:
            raise ValueError(f"the ONNX model has no node {name}/op: is it a qdq export of this model?")
        if code_names[name] not in have:
            have.add(code_names[name])
            probe.graph.output.append(helper.make_tensor_value_info(code_names[name], TensorProto.UINT8, None))
    session = (session_factory or (lambda data: plain_session(data, threads)))(probe.SerializeToString())
    run = compare_runs(model, deploy, session, proto.graph.output[0].name, code_names, rows, x, y, batch_size,
                       progress=progress, diagnose_below=tol.min_reference_agreement)
    report = make_report(run, rows, len(x), y, tol, proto, weights_required=True)
    return report
