"""DIST (arXiv 2205.10536) with the published CIFAR-100 setting: CE + 2·inter + 2·intra at T = 4."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from r2kd.config import DISTParams
from r2kd.distillers.base import Distiller
from r2kd.distillers.registry import register_distiller
from r2kd.losses import cross_entropy, dist_loss


@register_distiller
class DIST(Distiller):
    name: ClassVar[str] = "dist"
    uses_teacher: ClassVar[bool] = True
    uses_pruned_teacher: ClassVar[bool] = False
    Params: ClassVar[type[DISTParams]] = DISTParams
    params: DISTParams

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
        out[self._key("dist", clean)] = dist_loss(
            student, self._teacher(teacher), p.temperature, p.beta, p.gamma
        )
        return out
