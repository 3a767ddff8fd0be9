"""Hinton knowledge distillation (arXiv 1503.02531) with mdistiller's CIFAR-100 weights: 0.1·CE + 0.9·KD,
T = 4. The T² factor keeps the soft term's gradient magnitude independent of T (Hinton et al. §2);
``batchmean`` matches mdistiller's ``kl_div(...).sum(1).mean()``.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from r2kd.method_params.kd import KDParams
from r2kd.methods._common import as_loss_dtype
from r2kd.methods.base import Method


def kd_loss(z_s: Tensor, z_t: Tensor, temperature: float) -> Tensor:
    """KL(P_t ‖ P_s) at temperature ``temperature``, averaged over the batch, times T²."""
    z_s, z_t = as_loss_dtype(z_s), as_loss_dtype(z_t)
    log_p_s = F.log_softmax(z_s / temperature, dim=1)
    # log_target avoids 0·log 0 = NaN when a teacher probability underflows to zero.
    log_p_t = F.log_softmax(z_t / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


class KD(Method):
    name: ClassVar[str] = "kd"
    Params: ClassVar[type[KDParams]] = KDParams
    params: KDParams

    def terms(self, *, student: Tensor, teacher: Tensor, pruned: Tensor | None, labels: Tensor,
              epoch: int) -> dict[str, Tensor]:
        return {"kd": self.params.kd_weight * kd_loss(student, teacher, self.params.temperature)}
