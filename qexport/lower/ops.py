"""Every ai.qexport op, named once: ONNX schema, torch.library op, onnxscript translation.

The torch ops' implementations call qexport.spec.reference, so running the deploy model in
PyTorch *is* running the integer definition; the dynamo exporter turns each call into one
custom-domain node through ``TRANSLATIONS``. The same schemas serve onnx.checker and shape
inference (see docs/ops.md for the contract in words).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx.defs
import onnxscript
import torch
from onnx.defs import OpSchema

from ..spec import reference as R

LIB = "qexport"
OPSET = onnxscript.values.Opset(R.DOMAIN, R.DOMAIN_VERSION)


@dataclass(frozen=True)
class OpDef:
    onnx_name: str  # e.g. "PostConv"
    torch_name: str  # e.g. "post_conv" -> torch.ops.qexport.post_conv
    kind: str  # "quantize" | "conv" | "gemm" | "conv_fused" | "pool"
    fmt: str | None  # activation method of quantize ops; the weight format of version-1 weighted ops
    legacy: bool = False  # a version-1 weighted op (format in its name), kept so that older files load

    @property
    def torch_op(self):
        return getattr(torch.ops.qexport, self.torch_name).default


OPS: dict[str, OpDef] = {}
SCHEMAS: dict[str, OpSchema] = {}
TRANSLATIONS: dict = {}

_A = OpSchema.AttrType
_F32, _U8 = "tensor(float)", "tensor(uint8)"


def _schema(name: str, doc: str, inputs: list[tuple[str, str]], outputs: list[tuple[str, str]],
            attributes: list[tuple[str, "OpSchema.AttrType", str]],
            optional_attributes: list[tuple[str, "OpSchema.AttrType", str]] = ()) -> OpSchema:
    types = {"F": _F32, "U": _U8}
    constraints = sorted({t for _, t in inputs + outputs})
    return OpSchema(
        name, R.DOMAIN, R.DOMAIN_VERSION, doc,
        inputs=[OpSchema.FormalParameter(n, t) for n, t in inputs],
        outputs=[OpSchema.FormalParameter(n, t) for n, t in outputs],
        type_constraints=[(t, [types[t]], {"F": "float32", "U": "uint8 codes"}[t]) for t in constraints],
        attributes=[OpSchema.Attribute(n, ty, d) for n, ty, d in attributes]
        + [OpSchema.Attribute(n, ty, d, required=False) for n, ty, d in optional_attributes],
        node_determinism=OpSchema.NodeDeterminism.Deterministic,
    )


def _register(op: OpDef, schema: OpSchema, torch_schema: str, impl: Callable, fake: Callable, translation: Callable) -> None:
    if not _schema_registered(op.onnx_name):
        onnx.defs.register_schema(schema)
    custom = torch.library.custom_op(f"{LIB}::{op.torch_name}", impl, mutates_args=(), schema=torch_schema)
    custom.register_fake(fake)
    OPS[op.onnx_name] = op
    SCHEMAS[op.onnx_name] = schema
    TRANSLATIONS[op.torch_op] = translation


def _schema_registered(name: str) -> bool:
    try:
        onnx.defs.get_schema(name, R.DOMAIN_VERSION, R.DOMAIN)
        return True
    except onnx.defs.SchemaError:
        return False


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


# --------------------------------------------------------------------------- quantize ops
_QUANT_ATTRS = [("bits", _A.INT, "bit-width, 2..8"), ("signed", _A.INT, "0: codes 0..2^b-1; 1: q + 2^(b-1)"),
                ("step", _A.FLOAT, "the learned step s (finite, > 0)")]


def _quant_fake(x: torch.Tensor, *rest):
    return torch.empty_like(x, dtype=torch.uint8), x.new_empty((x.shape[0],))


_ASQ_ATTRS = [("beta_map", _A.STRING, "adapter output map: relu (max(z, 1e-8)); absent: sigmoid2 (older files)"),
              ("groups", _A.INT, "adapter input groups G (W1 is (H, G)); absent or 0: one per channel")]


def _asq_impl(x, w1, b1, w2, b2, step, bits, signed, beta_map, groups):
    codes, scale = R.asq_quantize(_np(x), _np(w1), _np(b1), _np(w2), _np(b2), step, bits, bool(signed), beta_map, groups)
    return torch.from_numpy(codes), torch.from_numpy(scale)


def _lsq_impl(x, step, bits, signed):
    codes, scale = R.lsq_quantize(_np(x), step, bits, bool(signed))
    return torch.from_numpy(codes), torch.from_numpy(scale)


_register(
    OpDef("AsqQuantize", "asq_quantize", "quantize", "asq"),
    _schema("AsqQuantize", "ASQ: codes of X with a per-sample step s * beta(adapter(group_mean(mean_spatial(X)))).",
            [("X", "F"), ("W1", "F"), ("B1", "F"), ("W2", "F"), ("B2", "F")], [("Y", "U"), ("scale", "F")], _QUANT_ATTRS,
            _ASQ_ATTRS),
    "(Tensor x, Tensor w1, Tensor b1, Tensor w2, Tensor b2, float step, int bits, int signed, str beta_map, "
    "int groups) -> (Tensor, Tensor)",
    _asq_impl, _quant_fake,
    lambda x, w1, b1, w2, b2, step, bits, signed, beta_map, groups: OPSET.AsqQuantize(
        x, w1, b1, w2, b2, step=step, bits=bits, signed=signed, beta_map=beta_map, groups=groups, _outputs=2),
)
_register(
    OpDef("LsqQuantize", "lsq_quantize", "quantize", "lsq"),
    _schema("LsqQuantize", "LSQ: codes of X with a fixed step.", [("X", "F")], [("Y", "U"), ("scale", "F")], _QUANT_ATTRS),
    "(Tensor x, float step, int bits, int signed) -> (Tensor, Tensor)",
    _lsq_impl, _quant_fake,
    lambda x, step, bits, signed: OPSET.LsqQuantize(x, step=step, bits=bits, signed=signed, _outputs=2),
)

_register(
    OpDef("GlobalAvgPool", "global_avg_pool", "pool", None),
    _schema("GlobalAvgPool", "float32 mean over all dimensions after (N, C), summed in float64 in a defined order.",
            [("X", "F")], [("Y", "F")], []),
    "(Tensor x) -> Tensor",
    lambda x: torch.from_numpy(R.global_avg_pool(_np(x))),
    lambda x: x.new_empty(tuple(x.shape[:2]) + (1,) * (x.dim() - 2)),
    lambda x: OPSET.GlobalAvgPool(x),
)


def _register_activation(name: str, fn: Callable[[np.ndarray], np.ndarray], formula: str) -> None:
    """Sigmoid / Silu: float32 in, float32 out, computed by the reference (``fn``)."""
    _register(
        OpDef(name, f"act_{fn.__name__}", "activation", None),
        _schema(name, f"{formula}, computed in float64 in a defined order (reference.exp64): identical bits in "
                "PyTorch and ONNX Runtime.", [("X", "F")], [("Y", "F")], []),
        "(Tensor x) -> Tensor",
        lambda x: torch.from_numpy(np.ascontiguousarray(fn(_np(x)))),
        lambda x: torch.empty_like(x),
        lambda x: getattr(OPSET, name)(x),
    )


_register_activation("Sigmoid", R.sigmoid, "float32(1 / (1 + exp(-x)))")
_register_activation("Silu", R.silu, "float32(x / (1 + exp(-x)))")

# --------------------------------------------------------------------------- weighted ops
# QConv / QGemm / QConvFused take the weight format as data: attribute ``format`` names a codec
# (qexport/spec/codecs/) and ``bits`` holds one bit-width for every output channel or one per
# channel. A new format adds a codec, never an op. The version-1 ops of one format each
# (PostConv, PotGemm, UniformConvFused, ...) keep their schemas and kernels so that older files
# load; nothing emits them any more (docs/ops.md, "Versions").
_W_INPUTS = [("X", "U"), ("X_scale", "F"), ("W", "U"), ("W_scale", "F"), ("B", "F")]
_W_COMMON = [("act_bits", _A.INT, "bit-width of the codes in X"),
             ("act_zero_point", _A.INT, "zero point of the codes in X"),
             ("weight_shape", _A.INTS, "conv [O, C/group, kH, kW]; gemm [O, K]"), ("relu", _A.INT, "fused ReLU, 0 or 1")]
_W_ATTRS = [("format", _A.STRING, "weight codec: " + ", ".join(R.WEIGHT_FORMATS)),
            ("bits", _A.INTS, "weight bit-width: 1 entry (every output channel) or O entries")] + _W_COMMON
_W_ATTRS_V1 = [("bits", _A.INT, "weight bit-width")] + _W_COMMON
_CONV_ATTRS = [("strides", _A.INTS, "[sH, sW]"), ("pads", _A.INTS, "[top, left, bottom, right]"),
               ("dilations", _A.INTS, "[dH, dW]"), ("group", _A.INT, "groups")]
#: The version-1 op name prefix of each format that had ops of its own (frozen: new formats have none).
V1_FORMATS = {"Post": "post", "Pot": "pot", "Uniform": "uniform"}
_CONV_SIG = ("(Tensor x, Tensor x_scale, Tensor w, Tensor w_scale, Tensor b, str format, int[] bits, int act_bits, "
             "int act_zero_point, int[] weight_shape, int relu, int[] strides, int[] pads, int[] dilations, "
             "int group) -> Tensor")
_GEMM_SIG = ("(Tensor x, Tensor x_scale, Tensor w, Tensor w_scale, Tensor b, str format, int[] bits, int act_bits, "
             "int act_zero_point, int[] weight_shape, int relu) -> Tensor")


def _conv_fake(x, x_scale, w, w_scale, b, fmt, bits, act_bits, zp, weight_shape, relu, strides, pads, dilations, group):
    _, kh, kw = weight_shape[0], weight_shape[2], weight_shape[3]
    oh = (x.shape[2] + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (x.shape[3] + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    return x.new_empty((x.shape[0], weight_shape[0], oh, ow), dtype=torch.float32)


def _gemm_fake(x, x_scale, w, w_scale, b, fmt, bits, act_bits, zp, weight_shape, relu):
    return x.new_empty((x.shape[0], weight_shape[0]), dtype=torch.float32)


def _conv_impl(x, x_scale, w, w_scale, b, fmt, bits, act_bits, zp, weight_shape, relu, strides, pads, dilations, group):
    return torch.from_numpy(R.qconv(
        _np(x), _np(x_scale), _np(w), _np(w_scale), _np(b), fmt=fmt, bits=list(bits), act_bits=act_bits,
        act_zero_point=zp, weight_shape=weight_shape, strides=strides, pads=pads, dilations=dilations,
        group=group, relu=bool(relu)))


def _gemm_impl(x, x_scale, w, w_scale, b, fmt, bits, act_bits, zp, weight_shape, relu):
    return torch.from_numpy(R.qgemm(
        _np(x), _np(x_scale), _np(w), _np(w_scale), _np(b), fmt=fmt, bits=list(bits), act_bits=act_bits,
        act_zero_point=zp, weight_shape=weight_shape, relu=bool(relu)))


_register(
    OpDef("QConv", "qconv", "conv", None),
    _schema("QConv", "conv of uint8 activation codes with packed weights of any codec; float32 out (docs/ops.md).",
            _W_INPUTS, [("Y", "F")], _W_ATTRS + _CONV_ATTRS),
    _CONV_SIG, _conv_impl, _conv_fake,
    lambda x, x_scale, w, w_scale, b, fmt, bits, act_bits, zp, weight_shape, relu, strides, pads, dilations, group:
    OPSET.QConv(x, x_scale, w, w_scale, b, format=fmt, bits=list(bits), act_bits=act_bits, act_zero_point=zp,
                weight_shape=list(weight_shape), relu=relu, strides=list(strides), pads=list(pads),
                dilations=list(dilations), group=group),
)
_register(
    OpDef("QGemm", "qgemm", "gemm", None),
    _schema("QGemm", "Y = X W^T of uint8 activation codes with packed weights of any codec; float32 out.",
            _W_INPUTS, [("Y", "F")], _W_ATTRS),
    _GEMM_SIG, _gemm_impl, _gemm_fake,
    lambda x, x_scale, w, w_scale, b, fmt, bits, act_bits, zp, weight_shape, relu: OPSET.QGemm(
        x, x_scale, w, w_scale, b, format=fmt, bits=list(bits), act_bits=act_bits, act_zero_point=zp,
        weight_shape=list(weight_shape), relu=relu),
)


# --------------------------------------------------------------------------- fused conv ops
# QConvFused: a conv with the Add (residual), ReLU and activation quantizer that follow it in the
# graph, as one node (reference.qconv_fused, docs/ops.md). No PyTorch module emits it: the ONNX
# pass qexport.export.passes.fuse_conv_blocks rewrites exported graphs into it; the torch op and
# translation exist so that this table stays the one list of ops.
_OPT, _ONE = OpSchema.FormalParameterOption.Optional, OpSchema.FormalParameterOption.Single
_FUSED_INPUTS = _W_INPUTS + [("R", "F"), ("QW1", "F"), ("QB1", "F"), ("QW2", "F"), ("QB2", "F")]
_FUSED_OUTPUTS = [("Y", "F"), ("Q", "U"), ("Q_scale", "F")]
_FUSED_Q_ATTRS = [("quantizer", _A.STRING, "activation quantizer of Y: none, lsq or asq"),
                  ("q_bits", _A.INT, "its bit-width"), ("q_signed", _A.INT, "its signedness"),
                  ("q_step", _A.FLOAT, "its step"), ("q_beta_map", _A.STRING, "its beta_map (asq)"),
                  ("q_groups", _A.INT, "its groups (asq)")]
_FUSED_SIG = ("(Tensor x, Tensor x_scale, Tensor w, Tensor w_scale, Tensor b, Tensor? residual, Tensor? q_w1, "
              "Tensor? q_b1, Tensor? q_w2, Tensor? q_b2, str format, int[] bits, int act_bits, int act_zero_point, "
              "int[] weight_shape, int relu, int[] strides, int[] pads, int[] dilations, int group, str quantizer, "
              "int q_bits, int q_signed, float q_step, str q_beta_map, int q_groups) -> (Tensor, Tensor, Tensor)")


def _fused_schema(name: str, doc: str, attrs: list) -> OpSchema:
    types = {"F": _F32, "U": _U8}
    required = {"X", "X_scale", "W", "W_scale", "B"}
    return OpSchema(
        name, R.DOMAIN, R.DOMAIN_VERSION, doc,
        inputs=[OpSchema.FormalParameter(n, t, param_option=_ONE if n in required else _OPT) for n, t in _FUSED_INPUTS],
        outputs=[OpSchema.FormalParameter(n, t, param_option=_OPT) for n, t in _FUSED_OUTPUTS],
        type_constraints=[(t, [types[t]], {"F": "float32", "U": "uint8 codes"}[t]) for t in ("F", "U")],
        attributes=[OpSchema.Attribute(n, ty, d) for n, ty, d in attrs + _CONV_ATTRS]
        + [OpSchema.Attribute(n, ty, d, required=False) for n, ty, d in _FUSED_Q_ATTRS],
        node_determinism=OpSchema.NodeDeterminism.Deterministic,
    )


def _fused_impl(x, x_scale, w, w_scale, b, residual, q_w1, q_b1, q_w2, q_b2, fmt, bits, act_bits, zp, weight_shape,
                relu, strides, pads, dilations, group, quantizer, q_bits, q_signed, q_step, q_beta_map, q_groups):
    opt = [None if t is None else _np(t) for t in (residual, q_w1, q_b1, q_w2, q_b2)]
    y, q, scale = R.qconv_fused(
        _np(x), _np(x_scale), _np(w), _np(w_scale), _np(b), *opt, fmt=fmt, bits=list(bits), act_bits=act_bits,
        act_zero_point=zp, weight_shape=weight_shape, strides=strides, pads=pads, dilations=dilations,
        group=group, relu=bool(relu), quantizer=quantizer, q_bits=q_bits, q_signed=bool(q_signed), q_step=q_step,
        q_beta_map=q_beta_map, q_groups=q_groups)
    if q is None:
        q, scale = np.zeros((0,), np.uint8), np.zeros((0,), np.float32)
    return torch.from_numpy(y), torch.from_numpy(q), torch.from_numpy(scale)


def _fused_fake(x, x_scale, w, w_scale, b, residual, q_w1, q_b1, q_w2, q_b2, fmt, bits, act_bits, zp, weight_shape,
                relu, strides, pads, dilations, group, quantizer, q_bits, q_signed, q_step, q_beta_map, q_groups):
    y = _conv_fake(x, x_scale, w, w_scale, b, fmt, bits, act_bits, zp, weight_shape, relu, strides, pads, dilations,
                   group)
    if quantizer == "none":
        return y, x.new_empty((0,), dtype=torch.uint8), x.new_empty((0,), dtype=torch.float32)
    return y, torch.empty_like(y, dtype=torch.uint8), y.new_empty((y.shape[0],))


def _fused_translation(x, x_scale, w, w_scale, b, residual, q_w1, q_b1, q_w2, q_b2, fmt, bits, act_bits, zp,
                       weight_shape, relu, strides, pads, dilations, group, quantizer, q_bits, q_signed, q_step,
                       q_beta_map, q_groups):
    return OPSET.QConvFused(
        x, x_scale, w, w_scale, b, residual, q_w1, q_b1, q_w2, q_b2, format=fmt, bits=list(bits), act_bits=act_bits,
        act_zero_point=zp, weight_shape=list(weight_shape), relu=relu, strides=list(strides), pads=list(pads),
        dilations=list(dilations), group=group, quantizer=quantizer, q_bits=q_bits, q_signed=q_signed,
        q_step=q_step, q_beta_map=q_beta_map, q_groups=q_groups, _outputs=3)


_register(
    OpDef("QConvFused", "qconv_fused", "conv_fused", None),
    _fused_schema("QConvFused", "conv with packed weights of any codec, then + R, ReLU and the activation quantizer "
                  "of the result, fused (docs/ops.md); optional outputs Y (float32), Q (codes), Q_scale.", _W_ATTRS),
    _FUSED_SIG, _fused_impl, _fused_fake, _fused_translation,
)


# --------------------------------------------------------------------------- version-1 ops
def _register_v1(prefix: str, fmt: str) -> None:
    """<Fmt>Conv, <Fmt>Gemm, <Fmt>ConvFused: the format in the name, ``bits`` one INT. Schema and
    table entry only (for onnx.checker and the op list); the C++ library still runs them."""
    for suffix, kind, schema in (
            ("Conv", "conv", lambda n: _schema(n, f"version-1 {fmt} conv (use QConv)", _W_INPUTS, [("Y", "F")],
                                               _W_ATTRS_V1 + _CONV_ATTRS)),
            ("Gemm", "gemm", lambda n: _schema(n, f"version-1 {fmt} gemm (use QGemm)", _W_INPUTS, [("Y", "F")],
                                               _W_ATTRS_V1)),
            ("ConvFused", "conv_fused", lambda n: _fused_schema(n, f"version-1 {fmt} fused conv (use QConvFused)",
                                                                _W_ATTRS_V1))):
        name = prefix + suffix
        if not _schema_registered(name):
            onnx.defs.register_schema(schema(name))
        OPS[name] = OpDef(name, "", kind, fmt, legacy=True)
        SCHEMAS[name] = onnx.defs.get_schema(name, R.DOMAIN_VERSION, R.DOMAIN)


for _prefix, _fmt in V1_FORMATS.items():
    _register_v1(_prefix, _fmt)


def weight_format(node_op_type: str, attrs: dict) -> tuple[str, list[int]]:
    """(format, bits per the node) of a weighted node of either version, from its attributes."""
    op = OPS[node_op_type]
    if op.legacy:
        return op.fmt, [int(attrs["bits"])]
    fmt = attrs["format"]
    return (fmt.decode() if isinstance(fmt, bytes) else fmt), [int(b) for b in attrs["bits"]]


def quantize_op(kind: str) -> OpDef:
    return OPS[{"asq": "AsqQuantize", "lsq": "LsqQuantize"}[kind]]
