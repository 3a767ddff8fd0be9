"""Hinton KD (arXiv 1503.02531) with mdistiller's CIFAR-100 weights: 0.1·CE + 0.9·KD, T = 4."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from r2kd.config import KDParams
from r2kd.distillers.base import Distiller
from r2kd.distillers.registry import register_distiller
from r2kd.losses import cross_entropy, kd_loss


@register_distiller
class KD(Distiller):
    name: ClassVar[str] = "kd"
    uses_teacher: ClassVar[bool] = True
    uses_pruned_teacher: ClassVar[bool] = False
    Params: ClassVar[type[KDParams]] = KDParams
    params: KDParams

    def losses(
        self,
        *,
        student: Tensor,
        teacher: Tensor | None,
        pruned: Tensor | None,
        labels: Tensor,
        clean: bool,
        epoch: int,
    ) -> dict[str, Tensor]:
        p = self.params
        out: dict[str, Tensor] = {}
        if clean:
            out["ce"] = p.ce_weight * cross_entropy(student, labels)
        out[self._key("kd", clean)] = p.kd_weight * kd_loss(student, self._teacher(teacher), p.temperature)
        return out
