"""Building blocks shared by the zoo.

Structure rules the exporter relies on: every Conv2d is followed directly by its own
BatchNorm2d (the conv output feeds nothing else), ReLUs are ``nn.ReLU`` modules, no in-place
ops on tensors that are reused, no data-dependent control flow (fx and torch.export trace it).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

# Per-channel statistics of the training sets, on pixels scaled to [0, 1].
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; mean and std are buffers so they travel with the state dict."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32)
        std_t = torch.as_tensor(list(std), dtype=torch.float32)
        if mean_t.ndim != 1 or mean_t.shape != std_t.shape:
            raise ValueError(f"mean and std must be 1-D of equal length, got {list(mean)} and {list(std)}")
        if bool((std_t <= 0).any()):
            raise ValueError(f"std must be positive, got {list(std)}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def channel_stats(mean: Sequence[float], std: Sequence[float], in_channels: int) -> tuple[list[float], list[float]]:
    """Broadcast 1-element statistics to ``in_channels`` and check the lengths."""
    mean, std = list(mean), list(std)
    if len(mean) == 1:
        mean = mean * in_channels
    if len(std) == 1:
        std = std * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean/std need 1 or {in_channels} values, got {len(mean)} and {len(std)}")
    return mean, std


class ConvBNReLU(nn.Sequential):
    """Conv2d(bias=False) -> BatchNorm2d -> ReLU (ReLU optional; ``groups`` = cin: depthwise)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, relu: bool = True,
                 groups: int = 1) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if relu:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 conv + BN projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + identity
        return self.relu2(out)


def init_weights(model: nn.Module, zero_init_residual: bool = False) -> None:
    """Kaiming-normal convs, unit BN, default Linear; optionally zero the last BN of each block."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on ``x``, per sample: every Conv1d/2d
    (output positions x input channels per group x kernel size x output channels) and Linear
    (per output row: an MLP on (N, T, F) counts every T)."""
    return layer_stats(model, x)[0]


def layer_stats(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """Per sample, in one forward pass of ``model`` on ``x``: (multiply-accumulates as in
    ``count_macs``, input values of its Conv1d/2d and Linear layers: what their activation
    quantizers see once the model is quantized)."""
    from ..inputs import run

    total = inputs = 0

    def hook(m: nn.Module, inp, out) -> None:
        nonlocal total, inputs
        inputs += inp[0].numel() // inp[0].shape[0]
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * math.prod(m.kernel_size)
        elif isinstance(m, nn.Linear):
            total += out.numel() // out.shape[0] * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            run(model.eval(), x)
    finally:
        for h in handles:
            h.remove()
    return total, inputs
