"""MobileNet-V1 (Howard et al. 2017, width 1.0), the ImageNet student of mdistiller's ResNet-50 pair.

Parameter names follow mdistiller's ``mdistiller/models/imagenet/mobilenetv1.py`` (``model.0.0`` the stem
conv, ``model.i.0`` / ``model.i.3`` the depthwise / pointwise convs of block i, ``fc``), so its checkpoints
load strictly. ``model.14`` is an adaptive average pool instead of ``AvgPool2d(7)`` (identical at 224 px,
and it works at every size); initialisation is PyTorch's default, as there (docs/models.md).
"""

from __future__ import annotations

import torch
from torch import nn

from r2kd.models.layers import conv_bn_relu
from r2kd.models.registry import register

STEM_CHANNELS = 32
# (output channels, stride) of the 13 depthwise-separable blocks
BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip


@register("mobilenet_v1")
class MobileNetV1(nn.Module):
    classifier_path = "fc"

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224) -> None:
        super().__init__()
        del input_size  # adaptive pooling: every size runs
        layers: list[nn.Module] = [nn.Sequential(*conv_bn_relu(in_channels, STEM_CHANNELS, 3, 2))]
        channels = STEM_CHANNELS
        for out, stride in BLOCKS:
            # 3x3 depthwise then 1x1 pointwise: model.i.0 / model.i.3
            layers.append(nn.Sequential(*conv_bn_relu(channels, channels, 3, stride, groups=channels),
                                        *conv_bn_relu(channels, out, 1, 1)))
            channels = out
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.model = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # flatten(1), not reshape(-1, 1024): a channel-pruned copy has fewer than 1024 features
        return self.fc(self.model(x).flatten(1))
