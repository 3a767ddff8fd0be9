"""Wide ResNets (Zagoruyko & Komodakis 2016) as used by RepDistiller / mdistiller.

Parameter names follow RepDistiller ``models/wrn.py`` (``blockN.layer.i.convShortcut`` ...).
The original reshapes with the stored ``self.nChannels``; that breaks once torch-pruning removes
channels, so this version flattens instead and stores no widths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from r2kd.models.layers import init_weights
from r2kd.models.registry import register_variants


class BasicBlock(nn.Module):
    """Pre-activation block: bn-relu-conv-bn-relu-conv plus shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.convShortcut: nn.Conv2d | None = None
        if in_planes != out_planes:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        # As in the reference: an identity shortcut carries the raw input, a projection
        # shortcut the pre-activated one.
        shortcut = x if self.convShortcut is None else self.convShortcut(pre)
        return out + shortcut


class NetworkBlock(nn.Module):
    """A stage; exists only so parameter names read ``blockN.layer.i...`` like the original."""

    def __init__(self, blocks: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*(BasicBlock(out_planes if i else in_planes, out_planes, 1 if i else stride)
                                     for i in range(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    classifier_path = "fc"

    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int = 3, input_size: int = 32) -> None:
        super().__init__()
        del input_size  # global pooling makes the network size-agnostic
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self, linear_std=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = F.relu(self.bn1(x))
        return self.fc(self.avgpool(x).flatten(1))


_VARIANTS = {"wrn_16_1": (16, 1), "wrn_16_2": (16, 2), "wrn_40_1": (40, 1), "wrn_40_2": (40, 2)}

register_variants(_VARIANTS, WideResNet)
