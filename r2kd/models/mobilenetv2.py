"""MobileNetV2 (Sandler et al. 2018), the half-width CIFAR variant of the KD zoo.

This is RepDistiller's ``mobile_half`` (expansion 6, width 0.5, last conv 1280), which mdistiller
registers as ``MobileNetV2``; parameter names follow ``models/mobilenetv2.py``
(``conv1.0``, ``blocks.i.j.conv.k``, ``conv2.0``, ``classifier.0``).

The stem and four blocks stride by 2 (total 16); below 16 px the final map would be under one pixel,
so there the stem uses stride 1 (:func:`stem_stride`; docs/models.md, "Input variants").
"""

from __future__ import annotations

import torch
from torch import nn

from r2kd.models.layers import conv_bn_relu, init_weights
from r2kd.models.registry import register

WIDTH_MULT = 0.5
EXPANSION = 6
LAST_CHANNELS = 1280  # not scaled for width <= 1, as in the reference
# (expansion, channels before width scaling, repeats, first stride)
_SETTING = (
    (1, 16, 1, 1),
    (EXPANSION, 24, 2, 1),
    (EXPANSION, 32, 3, 2),
    (EXPANSION, 64, 4, 2),
    (EXPANSION, 96, 3, 1),
    (EXPANSION, 160, 3, 2),
    (EXPANSION, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 linear projection; residual when shapes allow."""

    def __init__(self, inp: int, oup: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = inp * expansion
        # Decided once from the architecture; torch-pruning keeps the summed channels aligned.
        self.use_residual = stride == 1 and inp == oup
        self.conv = nn.Sequential(*conv_bn_relu(inp, hidden, 1, 1), *conv_bn_relu(hidden, hidden, 3, stride, hidden),
                                  nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


def stem_stride(input_size: int) -> int:
    """2, as in the reference, unless that would shrink an ``input_size`` px input below 1x1 (8 px ends at 1x1)."""
    return 2 if input_size >= 16 else 1


@register("MobileNetV2")
class MobileNetV2(nn.Module):
    classifier_path = "classifier.0"

    def __init__(self, num_classes: int, in_channels: int = 3, input_size: int = 32) -> None:
        super().__init__()
        channels = int(32 * WIDTH_MULT)
        self.conv1 = nn.Sequential(*conv_bn_relu(in_channels, channels, 3, stem_stride(input_size)))
        self.blocks = nn.ModuleList()
        for expansion, base, repeats, stride in _SETTING:
            out = int(base * WIDTH_MULT)
            stage = [InvertedResidual(channels if i == 0 else out, out, stride if i == 0 else 1, expansion)
                     for i in range(repeats)]
            self.blocks.append(nn.Sequential(*stage))
            channels = out
        self.conv2 = nn.Sequential(*conv_bn_relu(channels, LAST_CHANNELS, 1, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(LAST_CHANNELS, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for stage in self.blocks:
            x = stage(x)
        x = self.conv2(x)
        return self.classifier(self.avgpool(x).flatten(1))
