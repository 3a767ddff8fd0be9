"""DKD (arXiv 2203.08679) with mdistiller's defaults: CE + warm-up · (1·TCKD + 8·NCKD), T = 4.

On the augmented view DKD still needs a "target class" to split TCKD from NCKD; it uses the clean
labels (the label of the sample that was augmented, i.e. the one that owns the larger part of a
mixup/cutmix image on average). No mixed labels are used, matching R2KD's "no CE on x̃".
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from r2kd.config import DKDParams
from r2kd.distillers.base import Distiller
from r2kd.distillers.registry import register_distiller
from r2kd.losses import cross_entropy, dkd_loss, dkd_warmup_factor


@register_distiller
class DKD(Distiller):
    name: ClassVar[str] = "dkd"
    uses_teacher: ClassVar[bool] = True
    uses_pruned_teacher: ClassVar[bool] = False
    Params: ClassVar[type[DKDParams]] = DKDParams
    params: DKDParams

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
        factor = dkd_warmup_factor(epoch, p.warmup)
        out[self._key("dkd", clean)] = factor * dkd_loss(
            student, self._teacher(teacher), labels, alpha=p.alpha, beta=p.beta, temperature=p.temperature
        )
        return out
