"""CE-only student: the no-teacher baseline.

Its one term, ``ce_weight · CE`` on the clean view, is what every method shares, so
:class:`~r2kd.methods.base.Method` adds it and this class has no term of its own. CE is applied
to the clean view only (METHOD.md §4), so ce has nothing to train on an augmented view:
``uses_aug_view`` is False and the objective skips the extra view. ``aug_view`` is still accepted
(params.yaml may run every method under every augment); a ``ce`` run with an augment is the plain
CE student.
"""

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
