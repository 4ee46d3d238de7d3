"""MobileNetV3-Large (Howard et al. 2019), the paper's main network, laid out as torchvision's
(5.48M parameters at 1000 classes). Stages group the inverted-residual blocks by output
channels: 1, 2, 3, 4, 2, 3 blocks, so the default ordered space has the paper's 144
sub-networks. The CIFAR variant keeps the first stride-2 layers at stride 1."""

from __future__ import annotations

import torch
from torch import nn

from ..core.elastic import ElasticNet, ResidualBlock
from .registry import register_model

# (kernel, expanded, out, squeeze-excite, activation, stride) per block, by stage
LARGE = [
    [(3, 16, 16, False, "RE", 1)],
    [(3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1)],
    [(5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1)],
    [
        (3, 240, 80, False, "HS", 2),
        (3, 200, 80, False, "HS", 1),
        (3, 184, 80, False, "HS", 1),
        (3, 184, 80, False, "HS", 1),
    ],
    [(3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1)],
    [(5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1)],
]


def make_divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def conv_bn_act(
    in_ch: int, out_ch: int, k: int, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU
) -> nn.Sequential:
    layers = [
        nn.Conv2d(in_ch, out_ch, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch, eps=1e-3),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        mid = make_divisible(ch // 4)
        self.fc1, self.fc2 = nn.Conv2d(ch, mid, 1), nn.Conv2d(mid, ch, 1)
        self.relu, self.gate = nn.ReLU(), nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.relu(self.fc1(s))))


class InvertedResidual(ResidualBlock):
    def __init__(self, in_ch: int, k: int, expanded: int, out_ch: int, se: bool, act: str, stride: int) -> None:
        super().__init__()
        act_layer = nn.Hardswish if act == "HS" else nn.ReLU
        layers = []
        if expanded != in_ch:
            layers.append(conv_bn_act(in_ch, expanded, 1, act=act_layer))
        layers.append(conv_bn_act(expanded, expanded, k, stride, groups=expanded, act=act_layer))
        if se:
            layers.append(SqueezeExcite(expanded))
        layers.append(conv_bn_act(expanded, out_ch, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.skippable = stride == 1 and in_ch == out_ch

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)

    def merge(self, x: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
        # a projection block (not skippable) has no shortcut at all
        return b if x is None or not self.skippable else x + b


class MobileNetV3(ElasticNet):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, cifar: bool = False, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = conv_bn_act(in_chans, 16, 3, 1 if cifar else 2, act=nn.Hardswish)
        stages, in_ch = [], 16
        for i, cfg in enumerate(LARGE):
            blocks = []
            for k, exp, out, se, act, stride in cfg:
                if cifar and i == 1 and stride == 2:
                    stride = 1  # 32x32 inputs: keep resolution through the first downsampling
                blocks.append(InvertedResidual(in_ch, k, exp, out, se, act, stride))
                in_ch = out
            stages.append(nn.ModuleList(blocks))
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(
            conv_bn_act(in_ch, 960, 1, act=nn.Hardswish),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(960, 1280),
            nn.Hardswish(),
            nn.Dropout(dropout),
            nn.Linear(1280, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)


@register_model
def mobilenetv3_large(**kw) -> MobileNetV3:
    return MobileNetV3(**kw)


@register_model
def mobilenetv3_large_cifar(**kw) -> MobileNetV3:
    return MobileNetV3(cifar=True, **kw)
