"""MobileNetV2 (Sandler et al. 2018), ImageNet-style (224x224) and CIFAR-style (32x32).

The ASQ/POST paper's second architecture and the standard edge network: inverted residual
blocks of a 1x1 expansion, a 3x3 depthwise conv and a 1x1 linear projection.

One deliberate difference from torchvision's definition: the activations are ReLU, not ReLU6.
Under quantization-aware training the activation quantizer's learned range clips already (the
6 of ReLU6 was a fixed range for 8-bit inference), and a ReLU fuses into qexport's conv
epilogue while ReLU6 stays a float Clip node between the integer ops. ``relu6=True`` builds the
torchvision form (it converts too, with the Clip nodes left float).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .common import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, Normalize, channel_stats, init_weights
from .registry import register_model

# (expansion t, output channels c, blocks n, first stride s) of the paper's Table 2.
IMAGENET_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                    (6, 320, 1, 1))
# 32x32 inputs: the stem and the second stage keep the resolution (the common CIFAR variant), so
# the last stages still see 4x4 maps.
CIFAR_SETTING = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                 (6, 320, 1, 1))


def _divisible(v: float, divisor: int = 8) -> int:
    """Channels rounded to a multiple of 8, never below 90% of ``v`` (the reference's rule)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn(cin: int, cout: int, kernel_size: int, stride: int, groups: int, act: type[nn.Module] | None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=kernel_size // 2,
                                         groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t = 1) -> 3x3 depthwise (stride s) -> 1x1 linear projection;
    the input is added back when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, act: type[nn.Module]) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, hidden, 1, 1, 1, act))
        layers += [_conv_bn(hidden, hidden, 3, stride, hidden, act), _conv_bn(hidden, cout, 1, 1, 1, None)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """Normalize -> stem conv -> inverted residual blocks -> 1x1 conv to 1280 -> pool -> Linear."""

    def __init__(self, setting: Sequence[Sequence[int]], stem_stride: int, num_classes: int, width_mult: float,
                 in_channels: int, mean: Sequence[float], std: Sequence[float], relu6: bool) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        act: type[nn.Module] = nn.ReLU6 if relu6 else nn.ReLU
        self.normalize = Normalize(mean, std)
        cin = _divisible(32 * width_mult)
        last = _divisible(1280 * max(1.0, width_mult))
        blocks: list[nn.Module] = [_conv_bn(in_channels, cin, 3, stem_stride, 1, act)]
        for t, c, n, s in setting:
            cout = _divisible(c * width_mult)
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t, act))
                cin = cout
        blocks.append(_conv_bn(cin, last, 1, 1, 1, act))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)  # a module, lowered to ai.qexport.GlobalAvgPool (bit-exact)
        self.classifier = nn.Linear(last, num_classes)
        init_weights(self)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.normalize(x))
        return self.classifier(torch.flatten(self.pool(x), 1))


def _mobilenet(setting, stem_stride: int, in_channels: int, num_classes: int, width_mult: float,
               mean: Sequence[float], std: Sequence[float], relu6: bool) -> nn.Module:
    mean, std = channel_stats(mean, std, in_channels)
    return MobileNetV2(setting, stem_stride, num_classes, width_mult, in_channels, mean, std, relu6)


@register_model("mobilenet_v2")
def mobilenet_v2(in_channels: int = 3, num_classes: int = 1000, width_mult: float = 1.0,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 relu6: bool = False) -> nn.Module:
    """ImageNet-style MobileNetV2 for 224x224 inputs (3.50 M parameters at width 1.0)."""
    return _mobilenet(IMAGENET_SETTING, 2, in_channels, num_classes, width_mult, mean, std, relu6)


@register_model("mobilenet_v2_cifar")
def mobilenet_v2_cifar(in_channels: int = 3, num_classes: int = 10, width_mult: float = 1.0,
                       mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD,
                       relu6: bool = False) -> nn.Module:
    """CIFAR-style MobileNetV2 for 32x32 inputs: stride-1 stem and second stage (2.24 M parameters)."""
    return _mobilenet(CIFAR_SETTING, 1, in_channels, num_classes, width_mult, mean, std, relu6)
