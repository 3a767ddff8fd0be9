"""R2KD (METHOD.md §1-4): CE on the clean view; value + rank terms on both views against the
mix of the teacher's and the pruned teacher's logits."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from r2kd.config import R2KDParams
from r2kd.distillers.base import Distiller
from r2kd.distillers.registry import register_distiller
from r2kd.losses import cross_entropy, mix_teacher_logits, rank_loss, value_loss


@register_distiller
class R2KD(Distiller):
    name: ClassVar[str] = "r2kd"
    uses_teacher: ClassVar[bool] = True
    uses_pruned_teacher: ClassVar[bool] = True
    Params: ClassVar[type[R2KDParams]] = R2KDParams
    params: R2KDParams

    def target(self, teacher: Tensor | None, pruned: Tensor | None) -> Tensor:
        z_t = self._teacher(teacher)
        if pruned is None:
            if self.params.teacher_weight == 1.0:  # ablation without the pruned teacher
                return z_t
            raise ValueError("r2kd needs pruned-teacher logits unless teacher_weight == 1")
        return mix_teacher_logits(z_t, pruned.detach(), self.params.teacher_weight)

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
        z_tgt = self.target(teacher, pruned)
        out: dict[str, Tensor] = {}
        if clean:
            out["ce"] = p.ce_weight * cross_entropy(student, labels)
        out[self._key("value", clean)] = value_loss(student, z_tgt, p.temperature, p.alpha)
        out[self._key("rank", clean)] = rank_loss(student, z_tgt, p.temperature, p.beta, p.rank, p.rank_sharpness)
        return out
