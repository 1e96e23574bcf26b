"""The integer (deploy) form of a quantized model: what gets exported and what validate runs.

``to_deploy(model)`` copies a calibrated/trained model, folds every BatchNorm that directly
follows a quantized layer into that layer's per-channel scale and bias (no weight code
changes), packs the integer weights, and replaces each QConv2d/QLinear by a module whose
forward calls the ai.qexport torch ops (implemented by the numpy reference). Running the
deploy model in PyTorch therefore computes exactly what the ONNX model computes.
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
import torch.fx
from torch import nn

from .description import IntegerModel, LayerSpec, QuantizerSpec
from .ops import OPS, quantize_op
from ..spec import reference as R
from ..quant.base import ActQuantizer
from ..nn.layers import QConv1d, QConv2d, QuantMixin
from ..nn.swap import _set_submodule


class DeployQuantize(nn.Module):
    """Frozen activation quantizer: x -> (uint8 codes, per-sample scale)."""

    def __init__(self, act_quant: ActQuantizer) -> None:
        super().__init__()
        p = act_quant.deploy_params()
        self.kind, self.bits, self.signed, self.step = p["kind"], p["bits"], int(p["signed"]), p["step"]
        self.zero_point = R.act_zero_point(self.bits, bool(self.signed))
        if self.kind == "asq":
            for key in ("w1", "b1", "w2", "b2"):
                self.register_buffer(key, torch.from_numpy(p[key]))
            self.beta_map, self.groups = p["beta_map"], int(p["groups"])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        op = quantize_op(self.kind).torch_op
        if self.kind == "asq":
            return op(x, self.w1, self.b1, self.w2, self.b2, self.step, self.bits, self.signed, self.beta_map,
                      self.groups)
        return op(x, self.step, self.bits, self.signed)


def _fold(layer: QuantMixin, bn: nn.Module | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(integer weights, w_scale, bias) with ``bn`` folded in (float64 math, float32 result)."""
    w_int, w_scale = layer.weight_quant.integer_weights(layer.weight)
    scale = w_scale.astype(np.float64)
    bias = (layer.bias.detach().double().cpu().numpy() if layer.bias is not None
            else np.zeros(w_int.shape[0], dtype=np.float64))
    if bn is not None:
        gamma = bn.weight.detach().double().cpu().numpy() if bn.affine else 1.0
        beta = bn.bias.detach().double().cpu().numpy() if bn.affine else 0.0
        inv = gamma / np.sqrt(bn.running_var.detach().double().cpu().numpy() + bn.eps)
        scale = scale * inv
        bias = beta + (bias - bn.running_mean.detach().double().cpu().numpy()) * inv
    return w_int, scale.astype(np.float32), np.asarray(bias, dtype=np.float32)


class _DeployWeighted(nn.Module):
    kind = ""

    def __init__(self, layer: QuantMixin, bn: nn.Module | None) -> None:
        super().__init__()
        self.quant = DeployQuantize(layer.act_quant)
        self.fmt, self.bits = layer.weight_quant.fmt, layer.weight_quant.bits
        w_int, w_scale, bias = _fold(layer, bn)
        self.weight_shape = [int(d) for d in w_int.shape]
        self.register_buffer("packed", torch.from_numpy(R.pack_weights(w_int, self.fmt, self.bits)))
        self.register_buffer("w_scale", torch.from_numpy(w_scale))
        self.register_buffer("bias", torch.from_numpy(bias))
        self.folded_bn = bn is not None
        self.relu = 0

    def common_args(self) -> tuple:
        return (self.fmt, self.channel_bits(), self.quant.bits, self.quant.zero_point, self.weight_shape, self.relu)

    def channel_bits(self) -> list[int]:
        """The op's ``bits`` attribute: one entry when every output channel has the same width."""
        bits = [int(b) for b in np.atleast_1d(self.bits)]
        return bits[:1] if len(set(bits)) == 1 else bits

    def spec(self, name: str) -> LayerSpec:
        """This layer's entry of the integer model's description (qexport.lower.description)."""
        bits = self.channel_bits()
        return LayerSpec(name=name, kind=self.kind, op=OPS["QConv" if self.kind == "conv" else "QGemm"].onnx_name,
                         weights=self.fmt, bits=bits[0] if len(bits) == 1 else tuple(bits),
                         act=QuantizerSpec(self.quant.kind, self.quant.bits, bool(self.quant.signed)),
                         folded_bn=self.folded_bn, weight_shape=tuple(self.weight_shape))

    def describe(self) -> dict:
        """One row of the model's ``qexport.bits`` metadata (``spec(...).to_json()``)."""
        return self.spec("").to_json()


class DeployConv2d(_DeployWeighted):
    kind = "conv"

    def __init__(self, layer: QConv2d, bn: nn.Module | None) -> None:
        super().__init__(layer, bn)
        self.strides = list(layer.stride)
        self.dilations = list(layer.dilation)
        self.group = layer.groups
        self.pads = _explicit_pads(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes, scale = self.quant(x)
        op = OPS["QConv"].torch_op
        return op(codes, scale, self.packed, self.w_scale, self.bias, *self.common_args(),
                  self.strides, self.pads, self.dilations, self.group)


class DeployConv1d(_DeployWeighted):
    """A Conv1d as the 2-D integer conv with a kernel of height 1: the input (N, C, L) is viewed as
    (N, C, 1, L) before its quantizer (the same values in the same order, so the same codes and
    per-sample step), the output (N, O, 1, L') as (N, O, L') (Unsqueeze / Squeeze in the graph)."""

    kind = "conv"

    def __init__(self, layer: nn.Conv1d, bn: nn.Module | None) -> None:
        super().__init__(layer, bn)
        o, cg, k = self.weight_shape
        self.weight_shape = [o, cg, 1, k]
        self.strides = [1, int(layer.stride[0])]
        self.dilations = [1, int(layer.dilation[0])]
        self.group = layer.groups
        self.pads = _explicit_pads_1d(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"a quantized Conv1d takes (N, C, L) inputs; got shape {tuple(x.shape)}")
        codes, scale = self.quant(x.unsqueeze(2))
        y = OPS["QConv"].torch_op(codes, scale, self.packed, self.w_scale, self.bias,
                                  *self.common_args(), self.strides, self.pads, self.dilations, self.group)
        return y.squeeze(2)


class DeployLinear(_DeployWeighted):
    kind = "gemm"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"a quantized Linear takes (N, features) inputs; got shape {tuple(x.shape)}")
        codes, scale = self.quant(x)
        op = OPS["QGemm"].torch_op
        return op(codes, scale, self.packed, self.w_scale, self.bias, *self.common_args())


class DeployGlobalAvgPool(nn.Module):
    """nn.AdaptiveAvgPool2d(1) (or a mean over every spatial dimension) with a defined summation
    order (ai.qexport.GlobalAvgPool), so the quantizer after it sees the same floats in PyTorch and
    in ONNX Runtime. ``keepdim=False``: the result as (N, C)."""

    def __init__(self, keepdim: bool = True) -> None:
        super().__init__()
        self.keepdim = keepdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = OPS["GlobalAvgPool"].torch_op(x)
        return y if self.keepdim else y.reshape(y.shape[0], y.shape[1])


class DeployActivation(nn.Module):
    """nn.Sigmoid / nn.SiLU with the defined float computation of ai.qexport.Sigmoid / Silu, so
    the quantizer after it sees the same floats in PyTorch and in ONNX Runtime (whose own float32
    Sigmoid differs from PyTorch's in the last bits)."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return OPS[self.op].torch_op(x.contiguous())


# float modules whose float32 result depends on the library: the defined op that replaces them
ACTIVATIONS = {nn.Sigmoid: "Sigmoid", nn.SiLU: "Silu"}


def _is_global_pool(m: nn.Module) -> bool:
    from .program import GlobalMean

    return ((isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)))
            or (isinstance(m, nn.AdaptiveAvgPool1d) and m.output_size in (1, (1,))) or isinstance(m, GlobalMean))


def _explicit_pads(conv: nn.Conv2d) -> list[int]:
    """ONNX-order pads [top, left, bottom, right] for int, 'valid' and 'same' padding."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return [0, 0, 0, 0]
        total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        return [total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2]
    ph, pw = conv.padding
    return [ph, pw, ph, pw]


def _explicit_pads_1d(conv: nn.Conv1d) -> list[int]:
    """The 2-D pads [top, left, bottom, right] of a Conv1d viewed with height 1."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return [0, 0, 0, 0]
        total = conv.dilation[0] * (conv.kernel_size[0] - 1)
        return [0, total // 2, 0, total - total // 2]
    return [0, int(conv.padding[0]), 0, int(conv.padding[0])]


class _LeafTracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QuantMixin) or super().is_leaf_module(m, qualname)


def find_bn_pairs(model: nn.Module) -> dict[str, str]:
    """{quantized layer name: BatchNorm name} for each BN fed only by a quantized layer."""
    try:  # a GraphModule (a torch.export program, qexport.lower.program) already is its graph
        graph = model.graph if isinstance(model, torch.fx.GraphModule) else _LeafTracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure only disables folding
        warnings.warn(f"could not trace the model to fold BatchNorm ({exc}); BatchNorm stays a separate float op")
        return {}
    mods = dict(model.named_modules())
    pairs = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), (nn.BatchNorm1d, nn.BatchNorm2d)):
            continue
        bn = mods[node.target]
        src = node.args[0] if node.args else None
        if (isinstance(src, torch.fx.Node) and src.op == "call_module" and isinstance(mods.get(src.target), QuantMixin)
                and len(src.users) == 1 and bn.track_running_stats and bn.running_var is not None
                and src.target not in pairs):
            pairs[src.target] = node.target
    return pairs


@torch.no_grad()
def to_deploy(model: nn.Module) -> nn.Module:
    """A deploy copy of a quantized model (eval mode); the input model is left untouched."""
    deploy = copy.deepcopy(model).eval()
    layers = {n: m for n, m in deploy.named_modules() if isinstance(m, QuantMixin)}
    if not layers:
        raise ValueError("model has no quantized layers: quantize_() and calibrate() it first")
    pairs = find_bn_pairs(deploy)
    for name, layer in layers.items():
        bn = deploy.get_submodule(pairs[name]) if name in pairs else None
        cls = DeployConv2d if isinstance(layer, QConv2d) else DeployConv1d if isinstance(layer, QConv1d) else DeployLinear
        _set_submodule(deploy, name, cls(layer, bn))
        if bn is not None:
            _set_submodule(deploy, pairs[name], nn.Identity())
    for name, m in [(n, m) for n, m in deploy.named_modules() if _is_global_pool(m)]:
        _set_submodule(deploy, name, DeployGlobalAvgPool(getattr(m, "keepdim", True)))
    for name, m in [(n, m) for n, m in deploy.named_modules() if type(m) in ACTIVATIONS]:
        _set_submodule(deploy, name, DeployActivation(ACTIVATIONS[type(m)]))
    return deploy


def deploy_layers(deploy: nn.Module) -> dict[str, _DeployWeighted]:
    return {n: m for n, m in deploy.named_modules() if isinstance(m, _DeployWeighted)}


def lower(model: nn.Module) -> IntegerModel:
    """The typed description of a quantized (or already deploy) model's integer layers."""
    deploy = model if deploy_layers(model) else to_deploy(model)
    return IntegerModel({name: layer.spec(name) for name, layer in deploy_layers(deploy).items()})
