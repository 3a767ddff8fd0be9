"""CIFAR VGGs with batch norm, no hidden FC layers, as used by RepDistiller / mdistiller.

Parameter names follow RepDistiller ``models/vgg.py`` (``vgg*_bn``): five ``blockK`` Sequentials
of ``[conv, bn, relu]`` with the last relu dropped (so indices 0, 1, 3, 4, ... hold parameters),
then ``classifier``.

The reference max-pools after blocks 0-2 always, and after block 3 only for 64 px inputs; here that is
decided once from ``input_size`` (:func:`pooling_plan`), and a max-pool that would shrink the map below
1x1 (the 8x8 digits) becomes a parameter-free ``nn.Identity`` (docs/models.md, "Input variants").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from r2kd.models.layers import init_weights
from r2kd.models.registry import register_variants

_CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


def _block(widths: tuple[int, ...], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_channels = width
    # The block ends on BN: the network applies the relu itself (the reference exposes the
    # pre-activation there as a distillation feature).
    return nn.Sequential(*layers[:-1])


def pooling_plan(input_size: int) -> tuple[bool, bool, bool, bool]:
    """Which of pool0..pool3 are real 2x2 max-pools for a square input of ``input_size`` px."""
    plan, size = [], input_size
    for k in range(4):
        plan.append((k < 3 or input_size >= 64) and size >= 2)  # pool 3 only for 64 px; never below 1x1
        size = size // 2 if plan[-1] else size
    return tuple(plan)  # type: ignore[return-value]


class VGG(nn.Module):
    classifier_path = "classifier"

    def __init__(self, cfg: tuple[tuple[int, ...], ...], num_classes: int, in_channels: int = 3,
                 input_size: int = 32) -> None:
        super().__init__()
        self.block0 = _block(cfg[0], in_channels)
        self.block1 = _block(cfg[1], cfg[0][-1])
        self.block2 = _block(cfg[2], cfg[1][-1])
        self.block3 = _block(cfg[3], cfg[2][-1])
        self.block4 = _block(cfg[4], cfg[3][-1])
        self.pool0, self.pool1, self.pool2, self.pool3 = (
            nn.MaxPool2d(kernel_size=2, stride=2) if use else nn.Identity() for use in pooling_plan(input_size))
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cfg[4][-1], num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool0(F.relu(self.block0(x)))
        x = self.pool1(F.relu(self.block1(x)))
        x = self.pool2(F.relu(self.block2(x)))
        x = self.pool3(F.relu(self.block3(x)))
        x = F.relu(self.block4(x))
        return self.classifier(self.pool4(x).flatten(1))


register_variants({name: (cfg,) for name, cfg in _CONFIGS.items()}, VGG)
