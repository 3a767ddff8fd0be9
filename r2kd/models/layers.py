"""Parameter-free building blocks shared by several families."""

from __future__ import annotations

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
