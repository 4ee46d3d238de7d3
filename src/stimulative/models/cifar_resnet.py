"""CIFAR ResNets of He et al. 2016 (resnet20/32/44/56/110): 3 stages of 16/32/64 channels,
basic blocks, parameter-free shortcuts (option A: subsample and zero-pad) so the counts
match the paper's table (0.27M ... 1.7M with 10 classes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.elastic import ElasticNet, ResidualBlock
from .registry import register_model


class BasicBlock(ResidualBlock):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.stride, self.pad = stride, out_ch - in_ch
        self.skippable = stride == 1 and in_ch == out_ch

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.skippable:
            return x
        x = x[:, :, :: self.stride, :: self.stride]  # option A: subsample, zero-pad channels
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def merge(self, x: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
        return F.relu(b if x is None else self.shortcut(x) + b)


class CifarResNet(ElasticNet):
    def __init__(self, depth: int, num_classes: int = 10, in_chans: int = 3, width: int = 16) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        widths = [width, 2 * width, 4 * width]
        stages, in_ch = [], width
        for i, w in enumerate(widths):
            blocks = [BasicBlock(in_ch if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            stages.append(nn.ModuleList(blocks))
            in_ch = w
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)


@register_model
def resnet20(**kw) -> CifarResNet:
    return CifarResNet(20, **kw)


@register_model
def resnet32(**kw) -> CifarResNet:
    return CifarResNet(32, **kw)


@register_model
def resnet44(**kw) -> CifarResNet:
    return CifarResNet(44, **kw)


@register_model
def resnet56(**kw) -> CifarResNet:
    return CifarResNet(56, **kw)


@register_model
def resnet110(**kw) -> CifarResNet:
    return CifarResNet(110, **kw)
