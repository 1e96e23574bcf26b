"""ResNet-20 (CIFAR-style) and ResNet-18 (ImageNet-style), both with BasicBlock."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .common import (CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, BasicBlock, ConvBNReLU,
                     Normalize, channel_stats, init_weights)
from .registry import register_model


def _stage(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(cin, cout, stride)]
    layers += [BasicBlock(cout, cout, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """Normalize -> stem -> stages of BasicBlocks -> global average pool -> Linear."""

    def __init__(self, stem: nn.Module, widths: Sequence[int], blocks: Sequence[int], stem_width: int,
                 num_classes: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.stem = stem
        stages = []
        cin = stem_width
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stages.append(_stage(cin, w, n, stride=1 if i == 0 else 2))
            cin = w
        self.layers = nn.Sequential(*stages)
        # A module, not x.mean(): the exporter turns it into ai.qexport.GlobalAvgPool, whose
        # summation order is defined (docs/design.md), so the codes after it are bit-exact.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = self.stem(x)
        x = self.layers(x)
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x)


@register_model("resnet20")
def resnet20(in_channels: int = 3, num_classes: int = 10,
             mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD) -> nn.Module:
    """CIFAR-style ResNet-20: 3x3 stem, stages 16/32/64 of 3 BasicBlocks (0.27 M parameters)."""
    mean, std = channel_stats(mean, std, in_channels)
    stem = ConvBNReLU(in_channels, 16, 3, stride=1)
    return ResNet(stem, (16, 32, 64), (3, 3, 3), 16, num_classes, mean, std)


@register_model("resnet18")
def resnet18(in_channels: int = 3, num_classes: int = 1000,
             mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> nn.Module:
    """ImageNet-style ResNet-18: 7x7/2 stem, 3x3/2 max pool, stages 64/128/256/512 of 2 blocks."""
    mean, std = channel_stats(mean, std, in_channels)
    stem = nn.Sequential(
        nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
    )
    return ResNet(stem, (64, 128, 256, 512), (2, 2, 2, 2), 64, num_classes, mean, std)
