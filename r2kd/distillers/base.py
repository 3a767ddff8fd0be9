"""The distiller interface: a method's hyper-parameters plus the loss terms of one view.

The training loop owns the models. For every batch it calls :meth:`Distiller.losses` once on the
clean view (``clean=True``) and, when ``distiller.aug_view != "none"``, once more on the augmented
view of the same batch (``clean=False``; ``labels`` are the clean labels, subset with
``View.index`` when ``cutmixpick`` dropped rows). It sums every value of both dicts into the loss
and logs each term by name. Terms of the augmented view carry the suffix ``_aug`` so the two
views never collide in the logs.

``epoch`` is 1-based (the first epoch is 1), as in mdistiller; only DKD's warm-up reads it.
Teacher logits are detached here, so a loop that forgot ``no_grad`` still cannot train a teacher.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import Tensor

from r2kd.config import MethodParams as DistillerParams, ViewName as AugViewName

AUG_SUFFIX = "_aug"


class Distiller(ABC):
    name: ClassVar[str]
    uses_teacher: ClassVar[bool]
    uses_pruned_teacher: ClassVar[bool] = False
    # False when the method has no loss term on the augmented view (ce): skip the view entirely.
    uses_aug_view: ClassVar[bool] = True
    Params: ClassVar[type[DistillerParams]]

    def __init__(self, params: DistillerParams) -> None:
        if not isinstance(params, self.Params):
            raise TypeError(f"{self.name} expects {self.Params.__name__}, got {type(params).__name__}")
        self.params = params

    @property
    def aug_view(self) -> AugViewName:
        """The view the loop must build: ``params.aug_view``, or "none" for a method without a
        term on it (so "ce" under an augment costs no extra forward pass)."""
        return self.params.aug_view if self.uses_aug_view else "none"

    @abstractmethod
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
        """Named scalar loss terms of one view; the loop sums them."""

    # helpers for subclasses -------------------------------------------------------------------

    @staticmethod
    def _key(name: str, clean: bool) -> str:
        return name if clean else name + AUG_SUFFIX

    def _teacher(self, teacher: Tensor | None) -> Tensor:
        if teacher is None:
            raise ValueError(f"{self.name} needs teacher logits, got None")
        return teacher.detach()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"
