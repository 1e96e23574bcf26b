"""Quantized Conv2d / Conv1d / Linear used for calibration and quantization-aware training.

The training forward is "fake quantization": x_hat = act_quant(x), w_hat = weight_quant(w),
then the float op. The integer (deploy) form of the same layer lives in qexport.nn.deploy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..quant.base import ActQuantizer, WeightQuantizer


class QuantMixin:
    act_quant: ActQuantizer
    weight_quant: WeightQuantizer

    quantize_weights: bool = True  # False: float weights (the float model, used while calibrating)

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_quant(self.weight) if self.quantize_weights else self.weight


class _QConv(QuantMixin):
    """What QConv1d and QConv2d share: the quantizers, the conversion from the float conv, the
    fake-quantized forward."""

    def __init__(self, *args, act_quant: ActQuantizer, weight_quant: WeightQuantizer, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(f"{type(self).__name__} supports padding_mode='zeros' only, got {self.padding_mode!r}")
        self.act_quant = act_quant
        self.weight_quant = weight_quant

    @classmethod
    def from_float(cls, conv: nn.Module, act_quant: ActQuantizer, weight_quant: WeightQuantizer):
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
                act_quant=act_quant, weight_quant=weight_quant)
        q.weight = conv.weight
        q.bias = conv.bias
        return q.to(conv.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.act_quant(x), self.quantized_weight(), self.bias)


class QConv2d(_QConv, nn.Conv2d):
    """nn.Conv2d with an activation quantizer on its input and a weight quantizer."""


class QConv1d(_QConv, nn.Conv1d):
    """nn.Conv1d with an activation quantizer on its input and a weight quantizer (lowered to the
    2-D integer conv with a kernel of height 1)."""


class QLinear(nn.Linear, QuantMixin):
    """nn.Linear with an activation quantizer on its input and a weight quantizer."""

    def __init__(self, *args, act_quant: ActQuantizer, weight_quant: WeightQuantizer, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.act_quant = act_quant
        self.weight_quant = weight_quant

    @classmethod
    def from_float(cls, lin: nn.Linear, act_quant: ActQuantizer, weight_quant: WeightQuantizer) -> "QLinear":
        q = cls(lin.in_features, lin.out_features, bias=lin.bias is not None, act_quant=act_quant, weight_quant=weight_quant)
        q.weight = lin.weight
        q.bias = lin.bias
        return q.to(lin.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.act_quant(x), self.quantized_weight(), self.bias)


QUANT_LAYERS: dict[type[nn.Module], type[nn.Module]] = {nn.Conv2d: QConv2d, nn.Conv1d: QConv1d, nn.Linear: QLinear}
