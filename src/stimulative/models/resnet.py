"""Bottleneck ResNets (resnet50/101) as in torchvision (stride on the 3x3 conv), with the
ImageNet stem, and CIFAR variants (3x3 stem, no max-pool) for small images."""

from __future__ import annotations

import torch
from torch import nn

from ..core.elastic import ElasticNet, ResidualBlock
from .registry import register_model


class Bottleneck(ResidualBlock):
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.skippable = stride == 1 and in_ch == out_ch
        self.downsample = (
            None
            if self.skippable
            else nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
        )

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.relu(self.bn2(self.conv2(h)))
        return self.bn3(self.conv3(h))

    def merge(self, x: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
        if x is None:
            return self.relu(b)
        return self.relu(b + (x if self.downsample is None else self.downsample(x)))


class ResNet(ElasticNet):
    def __init__(self, layers: list[int], num_classes: int = 1000, in_chans: int = 3, cifar_stem: bool = False) -> None:
        super().__init__()
        if cifar_stem:
            self.stem = nn.Sequential(nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
        stages, in_ch = [], 64
        for i, n in enumerate(layers):
            width = 64 * 2**i
            blocks = [
                Bottleneck(in_ch if j == 0 else width * 4, width, 2 if (i > 0 and j == 0) else 1) for j in range(n)
            ]
            stages.append(nn.ModuleList(blocks))
            in_ch = width * 4
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for stage in self.stages:  # zero-init the last BN of each branch: blocks start as identity
            for block in stage:
                nn.init.zeros_(block.bn3.weight)


@register_model
def resnet50(**kw) -> ResNet:
    return ResNet([3, 4, 6, 3], **kw)


@register_model
def resnet101(**kw) -> ResNet:
    return ResNet([3, 4, 23, 3], **kw)


@register_model
def resnet50_cifar(**kw) -> ResNet:
    return ResNet([3, 4, 6, 3], cifar_stem=True, **kw)


@register_model
def resnet101_cifar(**kw) -> ResNet:
    return ResNet([3, 4, 23, 3], cifar_stem=True, **kw)
