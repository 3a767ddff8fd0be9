"""CE-only student: the no-teacher baseline.

CE is applied to the clean view only (METHOD.md §4), so ce has no term on an augmented view:
``uses_aug_view`` is False and a loop should skip the extra view for it. ``aug_view`` is still
accepted (params.yaml may run every method under every augment), and a ``ce`` run with an
augment is the plain CE student.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from r2kd.config import CEParams
from r2kd.distillers.base import Distiller
from r2kd.distillers.registry import register_distiller
from r2kd.losses import cross_entropy


@register_distiller
class CE(Distiller):
    name: ClassVar[str] = "ce"
    uses_teacher: ClassVar[bool] = False
    uses_pruned_teacher: ClassVar[bool] = False
    uses_aug_view: ClassVar[bool] = False
    Params: ClassVar[type[CEParams]] = CEParams
    params: CEParams

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
        if not clean:
            return {}
        return {"ce": self.params.ce_weight * cross_entropy(student, labels)}
