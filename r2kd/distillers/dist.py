"""DIST (arXiv 2205.10536) with the published CIFAR-100 setting: CE + 2·inter + 2·intra at T = 4."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from torch import Tensor

from r2kd.distillers.base import Distiller, DistillerParams
from r2kd.distillers.registry import register_distiller
from r2kd.losses import cross_entropy, dist_loss


class DISTParams(DistillerParams):
    temperature: float = Field(4.0, gt=0)
    beta: float = Field(2.0, ge=0, description="weight of the inter-class (per sample) term")
    gamma: float = Field(2.0, ge=0, description="weight of the intra-class (per class) term")
    ce_weight: float = Field(1.0, ge=0)


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
