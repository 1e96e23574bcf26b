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
    kind: str  # "quantize" | "conv" | "gemm" | "pool"
    fmt: str | None  # weight format of weighted ops; activation method of quantize ops

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

# --------------------------------------------------------------------------- weighted ops
_W_INPUTS = [("X", "U"), ("X_scale", "F"), ("W", "U"), ("W_scale", "F"), ("B", "F")]
_W_ATTRS = [("bits", _A.INT, "weight bit-width"), ("act_bits", _A.INT, "bit-width of the codes in X"),
            ("act_zero_point", _A.INT, "zero point of the codes in X"),
            ("weight_shape", _A.INTS, "conv [O, C/group, kH, kW]; gemm [O, K]"), ("relu", _A.INT, "fused ReLU, 0 or 1")]
_CONV_ATTRS = [("strides", _A.INTS, "[sH, sW]"), ("pads", _A.INTS, "[top, left, bottom, right]"),
               ("dilations", _A.INTS, "[dH, dW]"), ("group", _A.INT, "groups")]
_FMT_NAMES = {"post": "Post", "pot": "Pot", "uniform": "Uniform"}
_CONV_SIG = ("(Tensor x, Tensor x_scale, Tensor w, Tensor w_scale, Tensor b, int bits, int act_bits, int act_zero_point, "
             "int[] weight_shape, int relu, int[] strides, int[] pads, int[] dilations, int group) -> Tensor")
_GEMM_SIG = ("(Tensor x, Tensor x_scale, Tensor w, Tensor w_scale, Tensor b, int bits, int act_bits, int act_zero_point, "
             "int[] weight_shape, int relu) -> Tensor")


def _conv_fake(x, x_scale, w, w_scale, b, bits, act_bits, zp, weight_shape, relu, strides, pads, dilations, group):
    _, kh, kw = weight_shape[0], weight_shape[2], weight_shape[3]
    oh = (x.shape[2] + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (x.shape[3] + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    return x.new_empty((x.shape[0], weight_shape[0], oh, ow), dtype=torch.float32)


def _gemm_fake(x, x_scale, w, w_scale, b, bits, act_bits, zp, weight_shape, relu):
    return x.new_empty((x.shape[0], weight_shape[0]), dtype=torch.float32)


def _make_weighted(fmt: str, kind: str) -> None:
    onnx_name = _FMT_NAMES[fmt] + ("Conv" if kind == "conv" else "Gemm")
    op = OpDef(onnx_name, f"{fmt}_{kind}", kind, fmt)

    def call(*args, **kwargs):
        return getattr(OPSET, onnx_name)(*args, **kwargs)

    if kind == "conv":
        def impl(x, x_scale, w, w_scale, b, bits, act_bits, zp, weight_shape, relu, strides, pads, dilations, group):
            return torch.from_numpy(R.qconv(
                _np(x), _np(x_scale), _np(w), _np(w_scale), _np(b), fmt=fmt, bits=bits, act_bits=act_bits,
                act_zero_point=zp, weight_shape=weight_shape, strides=strides, pads=pads, dilations=dilations,
                group=group, relu=bool(relu)))

        def translation(x, x_scale, w, w_scale, b, bits, act_bits, zp, weight_shape, relu, strides, pads, dilations, group):
            return call(x, x_scale, w, w_scale, b, bits=bits, act_bits=act_bits, act_zero_point=zp,
                        weight_shape=list(weight_shape), relu=relu, strides=list(strides), pads=list(pads),
                        dilations=list(dilations), group=group)
        sig, fake, attrs = _CONV_SIG, _conv_fake, _W_ATTRS + _CONV_ATTRS
    else:
        def impl(x, x_scale, w, w_scale, b, bits, act_bits, zp, weight_shape, relu):
            return torch.from_numpy(R.qgemm(
                _np(x), _np(x_scale), _np(w), _np(w_scale), _np(b), fmt=fmt, bits=bits, act_bits=act_bits,
                act_zero_point=zp, weight_shape=weight_shape, relu=bool(relu)))

        def translation(x, x_scale, w, w_scale, b, bits, act_bits, zp, weight_shape, relu):
            return call(x, x_scale, w, w_scale, b, bits=bits, act_bits=act_bits, act_zero_point=zp,
                        weight_shape=list(weight_shape), relu=relu)
        sig, fake, attrs = _GEMM_SIG, _gemm_fake, _W_ATTRS
    doc = f"{kind} of uint8 activation codes with packed {fmt} weights; float32 out (docs/ops.md)."
    _register(op, _schema(onnx_name, doc, _W_INPUTS, [("Y", "F")], attrs), sig, impl, fake, translation)


for _fmt in R.WEIGHT_FORMATS:
    for _kind in ("conv", "gemm"):
        _make_weighted(_fmt, _kind)


# --------------------------------------------------------------------------- fused conv ops
# <Fmt>ConvFused: a conv with the Add (residual), ReLU and activation quantizer that follow it in
# the graph, as one node (reference.qconv_fused, docs/ops.md). No PyTorch module emits them: the
# ONNX pass qexport.export.passes.fuse_conv_blocks rewrites exported graphs into them; the torch op
# and translation exist so that the table below stays the one list of ops.
_OPT, _ONE = OpSchema.FormalParameterOption.Optional, OpSchema.FormalParameterOption.Single
_FUSED_INPUTS = _W_INPUTS + [("R", "F"), ("QW1", "F"), ("QB1", "F"), ("QW2", "F"), ("QB2", "F")]
_FUSED_OUTPUTS = [("Y", "F"), ("Q", "U"), ("Q_scale", "F")]
_FUSED_ATTRS = _W_ATTRS + _CONV_ATTRS
_FUSED_Q_ATTRS = [("quantizer", _A.STRING, "activation quantizer of Y: none, lsq or asq"),
                  ("q_bits", _A.INT, "its bit-width"), ("q_signed", _A.INT, "its signedness"),
                  ("q_step", _A.FLOAT, "its step"), ("q_beta_map", _A.STRING, "its beta_map (asq)"),
                  ("q_groups", _A.INT, "its groups (asq)")]
_FUSED_SIG = ("(Tensor x, Tensor x_scale, Tensor w, Tensor w_scale, Tensor b, Tensor? residual, Tensor? q_w1, "
              "Tensor? q_b1, Tensor? q_w2, Tensor? q_b2, int bits, int act_bits, int act_zero_point, "
              "int[] weight_shape, int relu, int[] strides, int[] pads, int[] dilations, int group, str quantizer, "
              "int q_bits, int q_signed, float q_step, str q_beta_map, int q_groups) -> (Tensor, Tensor, Tensor)")


def _fused_schema(name: str, doc: str) -> OpSchema:
    types = {"F": _F32, "U": _U8}
    required = {"X", "X_scale", "W", "W_scale", "B"}
    return OpSchema(
        name, R.DOMAIN, R.DOMAIN_VERSION, doc,
        inputs=[OpSchema.FormalParameter(n, t, param_option=_ONE if n in required else _OPT) for n, t in _FUSED_INPUTS],
        outputs=[OpSchema.FormalParameter(n, t, param_option=_OPT) for n, t in _FUSED_OUTPUTS],
        type_constraints=[(t, [types[t]], {"F": "float32", "U": "uint8 codes"}[t]) for t in ("F", "U")],
        attributes=[OpSchema.Attribute(n, ty, d) for n, ty, d in _FUSED_ATTRS]
        + [OpSchema.Attribute(n, ty, d, required=False) for n, ty, d in _FUSED_Q_ATTRS],
        node_determinism=OpSchema.NodeDeterminism.Deterministic,
    )


def _make_fused(fmt: str) -> None:
    onnx_name = _FMT_NAMES[fmt] + "ConvFused"
    op = OpDef(onnx_name, f"{fmt}_conv_fused", "conv_fused", fmt)

    def impl(x, x_scale, w, w_scale, b, residual, q_w1, q_b1, q_w2, q_b2, bits, act_bits, zp, weight_shape, relu,
             strides, pads, dilations, group, quantizer, q_bits, q_signed, q_step, q_beta_map, q_groups):
        opt = [None if t is None else _np(t) for t in (residual, q_w1, q_b1, q_w2, q_b2)]
        y, q, scale = R.qconv_fused(
            _np(x), _np(x_scale), _np(w), _np(w_scale), _np(b), *opt, fmt=fmt, bits=bits, act_bits=act_bits,
            act_zero_point=zp, weight_shape=weight_shape, strides=strides, pads=pads, dilations=dilations,
            group=group, relu=bool(relu), quantizer=quantizer, q_bits=q_bits, q_signed=bool(q_signed), q_step=q_step,
            q_beta_map=q_beta_map, q_groups=q_groups)
        if q is None:
            q, scale = np.zeros((0,), np.uint8), np.zeros((0,), np.float32)
        return torch.from_numpy(y), torch.from_numpy(q), torch.from_numpy(scale)

    def fake(x, x_scale, w, w_scale, b, residual, q_w1, q_b1, q_w2, q_b2, bits, act_bits, zp, weight_shape, relu,
             strides, pads, dilations, group, quantizer, q_bits, q_signed, q_step, q_beta_map, q_groups):
        y = _conv_fake(x, x_scale, w, w_scale, b, bits, act_bits, zp, weight_shape, relu, strides, pads, dilations,
                       group)
        if quantizer == "none":
            return y, x.new_empty((0,), dtype=torch.uint8), x.new_empty((0,), dtype=torch.float32)
        return y, torch.empty_like(y, dtype=torch.uint8), y.new_empty((y.shape[0],))

    def translation(x, x_scale, w, w_scale, b, residual, q_w1, q_b1, q_w2, q_b2, bits, act_bits, zp, weight_shape,
                    relu, strides, pads, dilations, group, quantizer, q_bits, q_signed, q_step, q_beta_map, q_groups):
        return getattr(OPSET, onnx_name)(
            x, x_scale, w, w_scale, b, residual, q_w1, q_b1, q_w2, q_b2, bits=bits, act_bits=act_bits,
            act_zero_point=zp, weight_shape=list(weight_shape), relu=relu, strides=list(strides), pads=list(pads),
            dilations=list(dilations), group=group, quantizer=quantizer, q_bits=q_bits, q_signed=q_signed,
            q_step=q_step, q_beta_map=q_beta_map, q_groups=q_groups, _outputs=3)

    doc = (f"conv with packed {fmt} weights, then + R, ReLU and the activation quantizer of the result, fused "
           "(docs/ops.md); optional outputs Y (float32), Q (codes), Q_scale.")
    _register(op, _fused_schema(onnx_name, doc), _FUSED_SIG, impl, fake, translation)


for _fmt in R.WEIGHT_FORMATS:
    _make_fused(_fmt)


def fused_op(fmt: str) -> OpDef:
    return OPS[_FMT_NAMES[fmt] + "ConvFused"]


def weighted_op(fmt: str, kind: str) -> OpDef:
    return OPS[_FMT_NAMES[fmt] + ("Conv" if kind == "conv" else "Gemm")]


def quantize_op(kind: str) -> OpDef:
    return OPS[{"asq": "AsqQuantize", "lsq": "LsqQuantize"}[kind]]
