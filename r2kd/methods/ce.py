"""CE-only student, the no-teacher baseline: its one term is the base class's CE. It accepts any
``aug_view`` but builds no view: a ``ce`` run under an augment is the plain CE student."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from r2kd.method_params.ce import CEParams
from r2kd.methods.base import Method


class CE(Method):
    name: ClassVar[str] = "ce"
    Params: ClassVar[type[CEParams]] = CEParams
    uses_teacher: ClassVar[bool] = False
    uses_aug_view: ClassVar[bool] = False
    params: CEParams

    def terms(self, *, student: Tensor, teacher: Tensor | None, pruned: Tensor | None, labels: Tensor,
              epoch: int) -> dict[str, Tensor]:
        return {}
