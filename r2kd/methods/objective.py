"""One training step's distillation objective (METHOD.md §4): which networks run on the clean batch
and on the method's augmented view, and which frozen passes share a batch (docs/architecture.md, "How
the fast paths keep their numbers"); ``fast`` feeds the batch as channels_last (the caller converts the
networks: :func:`r2kd.runtime.fast_layout`).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from r2kd import augment
from r2kd.methods.base import Method


class SharedPasses:
    """A cohort's views and frozen logits of one step, keyed by (what, on which input); cleared every step."""

    def __init__(self) -> None:
        self._done: dict[tuple[str, str], object] = {}
        self.computed = self.reused = 0  # passes run and reused (tests and benchmarks count the sharing)

    def get(self, key: tuple[str, str], compute):
        if key in self._done:
            self.reused += 1
        else:
            self._done[key] = compute()
            self.computed += 1
        return self._done[key]

    def clear(self) -> None:
        self._done.clear()


def frozen_roles(method: Method | type[Method]) -> tuple[str, ...]:
    """The frozen networks ``method`` runs: "teacher", "pruned" (the pair file verifies exactly these)."""
    return tuple(role for role, used in (("teacher", method.uses_teacher), ("pruned", method.uses_pruned_teacher))
                 if used)


def _frozen(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of a frozen network: no autograd graph, returned as an ordinary tensor."""
    with torch.inference_mode():
        out = module(x)
    return out.clone()


def batch_independent(module: torch.nn.Module) -> bool:
    """True when no submodule is in training mode (no batch statistics, no dropout)."""
    return not any(m.training for m in module.modules())


def only_batch_norm_trains(module: torch.nn.Module) -> bool:
    """True when only BatchNorms are in training mode (and none shards the batch): per_view_statistics' need."""
    modules = list(module.modules())
    return (not any(getattr(m, "shards_batch", False) for m in modules)
            and all(isinstance(m, _BatchNorm) for m in modules if m.training))


@contextlib.contextmanager
def per_view_statistics(module: torch.nn.Module, views: int) -> Iterator[None]:
    """Inside: each train-mode BatchNorm of ``module`` normalises each of ``views`` equal slices of its
    batch with that slice's statistics, updating the running ones slice after slice: one pass over
    ``torch.cat(views)`` equals a pass per view (bit for bit on the CPU, tests/test_fast_path.py)."""
    patched = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.training]

    def split(bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([type(bn).forward(bn, part) for part in x.chunk(views)])

    for bn in patched:
        bn.forward = functools.partial(split, bn)  # an instance attribute: shadows the class's forward
    try:
        yield
    finally:
        for bn in patched:
            del bn.forward


@dataclass
class DistillObjective:
    method: Method
    teacher: torch.nn.Module | None
    pruned: torch.nn.Module | None
    view_generator: torch.Generator
    mean: Sequence[float]
    std: Sequence[float]
    fast: bool = False
    # Set by r2kd.fast.graphs.GraphedStep: the device tensors holding this step's view draws, which the
    # view is then applied to (r2kd.augment.apply), not drawn here.
    static_draw: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    # A cohort's (r2kd.fast.cohort): each view and frozen pass computed once per step, reused bit for bit.
    shared: SharedPasses | None = field(default=None, repr=False)

    def graph_view(self) -> str | None:
        """The view every step builds, if it has a fixed-shape form; None if it cannot be captured."""
        aug = self.method.aug_view
        return aug if aug in augment.fixed_shape_views() else None

    def draw_view(self, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """This step's view draws (CPU), in the order the eager view draws them."""
        return augment.draw(self.method.aug_view, shape, self.view_generator)

    def __call__(self, student: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        x = self._layout(x)
        view, clean, on_view = self._clean_passes(x)
        terms = self._losses(student, x, y, epoch, clean, clean=True)
        view = self._view_passes(x, view, clean, on_view)
        if view is not None:
            labels = y if view.index is None else y[view.index]
            terms.update(self._losses(student, view.x, labels, epoch, on_view, clean=False))
        return terms

    def frozen_passes(self, x: torch.Tensor) -> None:
        """Compute (into ``shared``) every view and frozen pass a step on ``x`` needs, in the step's
        order, without the student: a cohort does this first, then runs its students side by side."""
        x = self._layout(x)
        view, clean, on_view = self._clean_passes(x)
        self._view_passes(x, view, clean, on_view)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.fast and x.dim() == 4 else x

    def _nets(self) -> list[str]:
        return [name for name in frozen_roles(self.method) if getattr(self, name) is not None]

    def _clean_passes(self, x: torch.Tensor):
        """The view (but cutmixpick's) and the frozen clean logits (and view logits, where one pass has both)."""
        aug = self.method.aug_view  # "none" also for a method with no term on the view (ce)
        # cutmixpick needs the teacher's clean logits to build its view; every other view is drawn first.
        view = None if aug in ("none", "cutmixpick") else self._once(("view", aug), lambda: self._view(aug, x, None))
        clean, on_view = dict.fromkeys(("teacher", "pruned")), dict.fromkeys(("teacher", "pruned"))
        for name in self._nets():
            net = getattr(self, name)
            if view is not None and self._batch_views(net, x, view.x):
                both = self._once((name, "clean+" + aug), lambda: self._frozen_views(net, x, view.x))
                clean[name], on_view[name] = both[: x.shape[0]], both[x.shape[0]:]
            else:
                clean[name] = self._once((name, "clean"), lambda: _frozen(net, x))
        return view, clean, on_view

    def _view_passes(self, x: torch.Tensor, view, clean: dict, on_view: dict):
        """The view (cutmixpick: from the clean teacher logits) and the frozen logits on it; fills ``on_view``."""
        aug = self.method.aug_view
        if aug == "cutmixpick":
            view = self._once(("view", aug), lambda: self._view(aug, x, clean["teacher"]))
        if view is not None:
            for name in self._nets():
                if on_view[name] is None:
                    on_view[name] = self._once((name, aug), lambda: _frozen(getattr(self, name), view.x))
        return view

    def _once(self, key: tuple[str, str], compute):
        return compute() if self.shared is None else self.shared.get(key, compute)

    # Where the fast path runs a frozen network's two views as one pass (not the CPU: see above).
    batch_views_on = ("cuda",)

    def _batch_views(self, net: torch.nn.Module, x: torch.Tensor, v: torch.Tensor) -> bool:
        return (self.fast and x.device.type in self.batch_views_on and v.shape[1:] == x.shape[1:]
                and v.dtype == x.dtype
                and (batch_independent(net) or (v.shape[0] == x.shape[0] and only_batch_norm_trains(net))))

    @staticmethod
    def _frozen_views(net: torch.nn.Module, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with contextlib.nullcontext() if batch_independent(net) else per_view_statistics(net, 2):
            return _frozen(net, torch.cat([x, v]))

    def _view(self, aug: str, x: torch.Tensor, clean_teacher: torch.Tensor | None):
        if self.static_draw is not None:
            return augment.apply(aug, x, self.static_draw)

        def logits_fn(batch: torch.Tensor) -> torch.Tensor:
            # cutmixpick ranks the clean batch by teacher entropy: those logits were computed already.
            return clean_teacher if (batch is x and clean_teacher is not None) else _frozen(self.teacher, batch)
        return augment.make_view(aug, x, generator=self.view_generator, mean=self.mean, std=self.std,
                         teacher_logits_fn=None if self.teacher is None else logits_fn,
                         autoaugment_per=self.method.params.autoaugment_per)

    def _losses(self, student, x, y, epoch, logits: dict, *, clean: bool) -> dict[str, torch.Tensor]:
        return self.method.losses(student=student(x), teacher=logits["teacher"], pruned=logits["pruned"], labels=y,
                                  clean=clean, epoch=epoch)
