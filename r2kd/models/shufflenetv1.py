"""ShuffleNet V1 (Zhang et al. 2018), groups 3, CIFAR variant of the KD zoo (``ShuffleV1``).

Parameter names follow RepDistiller ``models/ShuffleNetv1.py``: a 1x1 stem to 24 channels,
``layer1..3`` of bottlenecks, ``linear``. Every stage starts with a stride-2 block whose output
is concatenated with a 3x3 average-pooled shortcut, so the total stride is 8 (32 px -> 4x4,
64 px -> 8x8, 8 px -> 1x1) and no stride needs changing for small inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from r2kd.models.layers import ChannelShuffle
from r2kd.models.registry import register

STEM_CHANNELS = 24
OUT_PLANES = (240, 480, 960)
NUM_BLOCKS = (4, 8, 4)
GROUPS = 3


class Bottleneck(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int, first_groups: int) -> None:
        super().__init__()
        mid = out_planes // 4
        self.stride = stride
        # The network's very first 1x1 conv reads the 24 stem channels and is not grouped
        # (first_groups=1); every other one uses ``groups``.
        self.conv1 = nn.Conv2d(in_planes, mid, kernel_size=1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.shuffle1 = ChannelShuffle(first_groups)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle1(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        return F.relu(torch.cat([out, res], 1) if self.stride == 2 else out + res)


@register("ShuffleV1")
class ShuffleNetV1(nn.Module):
    classifier_path = "linear"

    def __init__(self, num_classes: int, in_channels: int = 3, input_size: int = 32) -> None:
        super().__init__()
        del input_size  # total stride 8 and global pooling: every size >= 1 px runs as is
        self.conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        planes = STEM_CHANNELS
        stages = []
        for out_planes, blocks in zip(OUT_PLANES, NUM_BLOCKS):
            layers = []
            for i in range(blocks):
                # The stride-2 block produces only the channels the concatenated shortcut lacks.
                produced = out_planes - planes if i == 0 else out_planes
                first_groups = 1 if not stages and i == 0 else GROUPS
                stride = 2 if i == 0 else 1
                layers.append(Bottleneck(planes, produced, stride, GROUPS, first_groups))
                planes = out_planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(OUT_PLANES[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.avgpool(x).flatten(1))
