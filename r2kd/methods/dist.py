"""DIST: "Knowledge Distillation from A Stronger Teacher" (Huang et al., arXiv 2205.10536), with the
published CIFAR-100 setting: CE + 2·inter + 2·intra at T = 4 (docs/losses.md); Pearson as in the
official loss (hunto/image_classification_sota ``lib/models/losses/dist_kd.py``).
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from r2kd.method_params.dist import DISTParams
from r2kd.methods._common import as_loss_dtype, pearson_rows
from r2kd.methods.base import Method


def dist_loss(z_s: Tensor, z_t: Tensor, temperature: float, beta: float, gamma: float) -> Tensor:
    """beta · inter + gamma · intra, both times T²: 1 − mean Pearson over the rows of the B × C
    probability matrices (samples) and over those of their transposes (classes)."""
    z_s, z_t = as_loss_dtype(z_s), as_loss_dtype(z_t)
    y_s = F.softmax(z_s / temperature, dim=1)
    y_t = F.softmax(z_t / temperature, dim=1)
    t2 = temperature**2
    inter = t2 * (1.0 - pearson_rows(y_s, y_t).mean())
    intra = t2 * (1.0 - pearson_rows(y_s.transpose(0, 1), y_t.transpose(0, 1)).mean())
    return beta * inter + gamma * intra


class DIST(Method):
    name: ClassVar[str] = "dist"
    Params: ClassVar[type[DISTParams]] = DISTParams
    params: DISTParams

    def terms(self, *, student: Tensor, teacher: Tensor, pruned: Tensor | None, labels: Tensor,
              epoch: int) -> dict[str, Tensor]:
        p = self.params
        return {"dist": dist_loss(student, teacher, p.temperature, p.beta, p.gamma)}
