"""CIFAR ResNets (He et al. 2016, option-B shortcuts) as used by RepDistiller / mdistiller.

Parameter names and shapes follow RepDistiller ``models/resnet.py`` exactly, so the published
``{"model": state_dict}`` teachers load strictly. The fixed ``AvgPool2d(8)`` of the original is a
global average pool at 32 px; an adaptive pool gives the same result there and lets 8 px and
64 px inputs through unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from r2kd.models.registry import register_variants


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn plus shortcut, relu after the sum."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        # A projection only where the shape changes; its presence (not a stored width) decides
        # the forward path, so a channel-pruned block still runs.
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet(nn.Module):
    """Three stages of ``(depth - 2) / 6`` basic blocks; stage widths ``widths[1:]``."""

    classifier_path = "fc"

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int, in_channels: int = 3,
                 input_size: int = 32) -> None:
        super().__init__()
        del input_size  # global pooling makes the network size-agnostic
        if (depth - 2) % 6:
            raise ValueError(f"basic-block ResNet depth must be 6n+2, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = self._stage(widths[0], widths[1], blocks_per_stage, stride=1)
        self.layer2 = self._stage(widths[1], widths[2], blocks_per_stage, stride=2)
        self.layer3 = self._stage(widths[2], widths[3], blocks_per_stage, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        self._init_weights()

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # Same scheme as the reference, so from-scratch teachers train like the published ones.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)  # the "x4" variants
_VARIANTS = {f"resnet{depth}": (depth, _NARROW) for depth in (8, 14, 20, 32, 44, 56, 110)}
_VARIANTS |= {f"resnet{depth}x4": (depth, _WIDE) for depth in (8, 32)}

register_variants(_VARIANTS, ResNet)
