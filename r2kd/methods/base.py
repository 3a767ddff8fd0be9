"""What every method shares (docs/extending.md): ``ce_weight · CE`` on the clean view only (METHOD.md
§4), detached teacher logits (a loop that forgot ``no_grad`` still cannot train a teacher), and the
``_aug`` suffix of the augmented view's terms, added here only. ``epoch`` is 1-based, as in mdistiller.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import Tensor

from r2kd import pipeline
from r2kd.config import MethodParams, ViewName
from r2kd.methods._common import cross_entropy

AUG_SUFFIX = "_aug"


class Method(ABC):
    name: ClassVar[str]
    Params: ClassVar[type[MethodParams]]  # the method's model in r2kd/config.py (METHOD_PARAMS[name])
    uses_teacher: ClassVar[bool] = True
    # Set from the pipeline table (r2kd/pipeline.py), which also decides what its students depend on.
    uses_pruned_teacher: ClassVar[bool] = False
    # False when the method has no term on the augmented view (ce): the objective skips the view.
    uses_aug_view: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        spec = pipeline.METHODS.get(getattr(cls, "name", ""))
        if spec is not None:
            cls.uses_pruned_teacher = spec.uses_pruned_teacher

    def __init__(self, params: MethodParams) -> None:
        if not isinstance(params, self.Params):
            raise TypeError(f"{self.name} expects {self.Params.__name__}, got {type(params).__name__}")
        self.params = params

    @property
    def aug_view(self) -> ViewName:
        """The view the objective builds: ``params.aug_view``, or "none" for a method with no term on it."""
        return self.params.aug_view if self.uses_aug_view else "none"

    def losses(self, *, student: Tensor, teacher: Tensor | None, pruned: Tensor | None, labels: Tensor, clean: bool,
               epoch: int) -> dict[str, Tensor]:
        """Named scalar loss terms of one view, CE first; the loop sums them."""
        out = {"ce": self.params.ce_weight * cross_entropy(student, labels)} if clean else {}
        if self.uses_teacher:
            if teacher is None:
                raise ValueError(f"{self.name} needs teacher logits, got None")
            teacher = teacher.detach()
        pruned = pruned.detach() if pruned is not None else None
        suffix = "" if clean else AUG_SUFFIX
        terms = self.terms(student=student, teacher=teacher, pruned=pruned, labels=labels, epoch=epoch)
        return out | {name + suffix: value for name, value in terms.items()}

    @abstractmethod
    def terms(self, *, student: Tensor, teacher: Tensor | None, pruned: Tensor | None, labels: Tensor,
              epoch: int) -> dict[str, Tensor]:
        """The method's own terms of one view, each times its weight (CE is added by :meth:`losses`)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"
