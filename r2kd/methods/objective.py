"""The distillation objective of one training step: student and frozen teachers on the clean batch
and, when the method asks for it, on one augmented view of the same batch (METHOD.md §4).

The method says which terms to compute from the logits (and names them, suffix included); this
module decides which networks run on which view. Views run as separate forward passes, never as
one concatenated batch, so train-mode BatchNorm (student, and the pruned teacher in the
reference) sees the same batch statistics as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from r2kd.augment import make_view
from r2kd.methods.base import Method


@dataclass
class DistillObjective:
    method: Method
    teacher: torch.nn.Module | None
    pruned: torch.nn.Module | None
    view_generator: torch.Generator
    mean: Sequence[float]
    std: Sequence[float]

    def __call__(self, student: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        terms = self._terms(student, x, y, epoch, clean=True)
        if self.method.aug_view != "none":  # "none" also for a method with no term on the view (ce)
            view = make_view(
                self.method.aug_view,
                x,
                generator=self.view_generator,
                mean=self.mean,
                std=self.std,
                teacher_logits_fn=self._teacher_logits if self.teacher is not None else None,
                autoaugment_per=self.method.params.autoaugment_per,
            )
            labels = y if view.index is None else y[view.index]
            terms.update(self._terms(student, view.x, labels, epoch, clean=False))
        return terms

    def _terms(self, student, x, y, epoch, *, clean: bool) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            teacher = self._teacher_logits(x) if self.method.uses_teacher else None
            pruned = self.pruned(x) if self.method.uses_pruned_teacher else None
        return self.method.losses(
            student=student(x), teacher=teacher, pruned=pruned, labels=y, clean=clean, epoch=epoch
        )

    @torch.no_grad()
    def _teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x)
