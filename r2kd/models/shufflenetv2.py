"""ShuffleNet V2 1.0x (Ma et al. 2018), CIFAR variant of the KD zoo (``ShuffleV2``).

Parameter names follow RepDistiller ``models/ShuffleNetv2.py``: 1x1 stem to 24 channels,
``layer1..3`` = one ``DownBlock`` then ``BasicBlock``s, a 1x1 ``conv2`` to 1024, ``linear``.
Total stride 8 (32 px -> 4x4, 64 px -> 8x8, 8 px -> 1x1), so small inputs need no change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from r2kd.models.layers import ChannelShuffle
from r2kd.models.registry import register

STEM_CHANNELS = 24
OUT_CHANNELS = (116, 232, 464, 1024)
NUM_BLOCKS = (3, 7, 3)


def _dw3x3(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)


def _pw(inp: int, oup: int) -> nn.Conv2d:
    return nn.Conv2d(inp, oup, kernel_size=1, bias=False)


class BasicBlock(nn.Module):
    """Split channels in half; transform the second half; concatenate; shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = _pw(half, half)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = _dw3x3(half, 1)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = _pw(half, half)
        self.bn3 = nn.BatchNorm2d(half)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The split point is read from the input (as the reference's int(C * 0.5)), not stored.
        half = x.shape[1] // 2
        x1, x2 = x[:, :half], x[:, half:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return self.shuffle(torch.cat([x1, out], 1))


class DownBlock(nn.Module):
    """Two stride-2 branches, each producing half the output channels."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = _dw3x3(in_channels, 2)  # left branch
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = _pw(in_channels, mid)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = _pw(in_channels, mid)  # right branch
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = _dw3x3(mid, 2)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = _pw(mid, mid)
        self.bn5 = nn.BatchNorm2d(mid)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return self.shuffle(torch.cat([left, right], 1))


@register("ShuffleV2")
class ShuffleNetV2(nn.Module):
    classifier_path = "linear"

    def __init__(self, num_classes: int, in_channels: int = 3, input_size: int = 32) -> None:
        super().__init__()
        del input_size  # total stride 8 and global pooling: every size >= 1 px runs as is
        self.conv1 = _pw(in_channels, STEM_CHANNELS)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        channels = STEM_CHANNELS
        stages = []
        for out, blocks in zip(OUT_CHANNELS[:3], NUM_BLOCKS):
            units = [DownBlock(channels, out)] + [BasicBlock(out) for _ in range(blocks)]
            stages.append(nn.Sequential(*units))
            channels = out
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = _pw(OUT_CHANNELS[2], OUT_CHANNELS[3])
        self.bn2 = nn.BatchNorm2d(OUT_CHANNELS[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(OUT_CHANNELS[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.linear(self.avgpool(x).flatten(1))
