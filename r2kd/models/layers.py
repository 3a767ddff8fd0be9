"""Building blocks and weight init shared by several families."""

from __future__ import annotations

import math

import torch
from torch import nn


class ChannelShuffle(nn.Module):
    """Interleave ``groups`` channel groups: [N, g*c, H, W] -> [N, c*g, H, W].

    The group size is read from the input, never stored, so a channel-pruned network still runs.
    """

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(1, (self.groups, -1)).transpose(1, 2).flatten(1, 2)


def conv_bn_relu(inp: int, oup: int, kernel: int, stride: int, groups: int = 1) -> list[nn.Module]:
    """Bias-free conv with "same" padding, BatchNorm, in-place ReLU: a list to splice into a Sequential."""
    conv = nn.Conv2d(inp, oup, kernel, stride, kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(oup), nn.ReLU(inplace=True)]


def init_weights(model: nn.Module, *, linear_std: float | None = 0.01) -> None:
    """RepDistiller's init: conv weights N(0, sqrt(2 / fan_out)), biases zero, BN (1, 0), linear
    weights N(0, ``linear_std``) (``None`` keeps PyTorch's default); module order fixes RNG use."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
