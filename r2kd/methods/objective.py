"""The distillation objective of one training step: student and frozen teachers on the clean batch
and, when the method asks for it, on one augmented view of the same batch (METHOD.md §4).

The method says which terms to compute from the logits (and names them, suffix included); this
module decides which networks run on which view.

Which passes may share a batch:
- The student and any frozen network with train-mode BatchNorm (the pruned teacher in the
  reference) run each view as a separate forward pass, never as one concatenated batch, so their
  batch statistics are those of the reference.
- A frozen network without any train-mode module (the teacher, always in eval mode) gives every
  sample the same logits whatever else is in its batch, so on CUDA with ``fast`` set
  (``runtime.fast_path``) it runs the clean batch and the view as ONE forward pass of 2B samples:
  half the kernel launches of a launch-bound step. cuDNN may pick another algorithm for 2B rows
  (rounding changes), hence the switch. Never on the CPU: there the logits would be bit-identical
  (tests/test_fast_path.py), but one 2B pass was measured slower than two B passes (26 % at
  32×32, 6 % at 8×8, 1 thread; docs/performance.md).
- A frozen network whose only train-mode modules are BatchNorm (the pruned teacher with
  ``prune.bn_mode: train``) also runs both views as one pass on that path, with each view's batch
  statistics kept apart (:func:`per_view_statistics`): each BatchNorm normalises each view's half
  with that half's own statistics and updates its running statistics clean half first, as the two
  separate passes do. The convolutions see 2B rows (cuDNN may round differently); the statistics,
  hence what the method sees, are those of the reference.
- Frozen passes run under ``torch.inference_mode`` (no autograd bookkeeping at all); their logits
  are copied out of inference mode so that a method may use them like any tensor.

Which thread runs a pass (``runtime.overlap``, CPU): with ``frozen_threads`` set, the frozen networks
that have a thread run their passes there, in order, while the calling thread draws the view and
runs the student; an R2KD step's two views then backpropagate side by side (:meth:`DistillObjective.
backward`). Told the next batch (:meth:`DistillObjective.upcoming`, by the training loop), a step
also queues that batch's clean passes behind its own, so they run during its backward pass and
update: a KD, DIST or DKD step then hides most of its teacher's forward pass. The same
values, computed on other threads and earlier (r2kd.overlap).

``fast`` (``runtime.fast_path``, resolved by :func:`r2kd.runtime.fast_path_enabled`) also feeds
the batch in channels_last memory format; the caller converts the networks
(:func:`r2kd.runtime.fast_layout`). Rounding may change, so it is opt-in on the CPU.
"""

from __future__ import annotations

import contextlib
import functools
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from r2kd.augment import make_view
from r2kd.methods.base import Method
from r2kd.overlap import HEAVIEST_FIRST, FrozenThreads, settle
from r2kd.static_views import apply_view, draw_view, static_views


class SharedPasses:
    """One step's views and frozen-network logits, keyed by (what, on which input), for the runs of
    a cohort (r2kd.cohort). Cleared at every step, so nothing outlives the batch it was computed on."""

    def __init__(self) -> None:
        self._done: dict[tuple[str, str], object] = {}
        self.computed = 0  # how many passes ran (tests and benchmarks count the sharing)
        self.reused = 0

    def get(self, key: tuple[str, str], compute):
        if key in self._done:
            self.reused += 1
        else:
            self._done[key] = compute()
            self.computed += 1
        return self._done[key]

    def clear(self) -> None:
        self._done.clear()


def _frozen(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of a frozen network: no autograd graph, returned as an ordinary tensor."""
    with torch.inference_mode():
        out = module(x)
    return out.clone()


def _grads(terms: list[torch.Tensor], params: list[torch.Tensor]) -> tuple[torch.Tensor | None, ...]:
    return torch.autograd.grad(sum(terms), params, allow_unused=True)


def _frozen_on_view(module: torch.nn.Module, view_ready: Future) -> torch.Tensor:
    """Logits of a frozen network on the step's view, once the thread that draws it has (overlap)."""
    return _frozen(module, view_ready.result().x)


def batch_independent(module: torch.nn.Module) -> bool:
    """True when no submodule is in training mode (no batch statistics, no dropout)."""
    return not any(m.training for m in module.modules())


def only_batch_norm_trains(module: torch.nn.Module) -> bool:
    """True when every submodule in training mode is a BatchNorm (nothing else depends on the batch):
    what :func:`per_view_statistics` needs."""
    modules = list(module.modules())
    return (not any(getattr(m, "shards_batch", False) for m in modules)
            and all(isinstance(m, _BatchNorm) for m in modules if m.training))


@contextlib.contextmanager
def per_view_statistics(module: torch.nn.Module, views: int) -> Iterator[None]:
    """Inside: each train-mode BatchNorm of ``module`` splits its batch into ``views`` equal slices and
    normalises each with its own batch statistics, updating the running statistics slice after
    slice; one pass over ``torch.cat(views)`` then equals a pass per view (bit for bit on the CPU,
    tests/test_fast_path.py)."""
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
    # Set by r2kd.graphs.GraphedStep for a step replayed as a CUDA graph: the device tensors holding
    # this step's view draws; the view is then built from them (r2kd.static_views), not drawn here.
    static_draw: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    # The runs of a cohort (r2kd.cohort) see the same batch, the same view draws (one view generator
    # per view kind, shared) and the same frozen networks: each view and each frozen pass is computed
    # by the first run that needs it in a step and reused, bit for bit, by the others.
    shared: SharedPasses | None = field(default=None, repr=False)
    # runtime.overlap (CPU): the frozen networks' passes run on these threads while the calling
    # thread runs the student; same numbers (r2kd.overlap).
    frozen_threads: FrozenThreads | None = field(default=None, repr=False)
    # The last overlapped step's term names, clean view's then augmented view's: what
    # :meth:`backward` splits the backward pass by.
    _views_of_terms: tuple[list[str], list[str]] | None = field(default=None, init=False, repr=False)
    # Overlap: the batch the next step will get (:meth:`upcoming`), and the clean passes already
    # queued for it on the frozen networks' threads, by network: (that batch, its logits to come).
    _upcoming: torch.Tensor | None = field(default=None, init=False, repr=False)
    _ahead: dict[str, tuple[torch.Tensor, Future]] = field(default_factory=dict, init=False, repr=False)

    def graph_view(self) -> str | None:
        """The view every step builds, if it has a fixed-shape form; None if it cannot be captured."""
        aug = self.method.aug_view
        return aug if aug in static_views() else None

    def draw_view(self, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """This step's view draws (CPU), in the order the eager view draws them."""
        return draw_view(self.method.aug_view, shape, self.view_generator)

    def __call__(self, student: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        self._views_of_terms = None
        if self._overlaps():
            return self._overlapped(student, x, y, epoch)
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
        method = self.method
        return [name for name, used in (("teacher", method.uses_teacher), ("pruned", method.uses_pruned_teacher))
                if used and getattr(self, name) is not None]

    def _clean_passes(self, x: torch.Tensor):
        """The view (all but cutmixpick) and the frozen networks' clean logits (and view logits, where
        one pass computes both)."""
        aug = self.method.aug_view  # "none" also for a method with no term on the view (ce)
        # Every view but cutmixpick is a function of the batch and the view generator only, so it can
        # be drawn first and the teacher can see both views in one pass. cutmixpick (when it drops
        # rows) needs the teacher's clean logits to build the view: it is drawn after them.
        view = None if aug in ("none", "cutmixpick") else self._once(("view", aug), lambda: self._view(aug, x, None))
        clean: dict[str, torch.Tensor | None] = {"teacher": None, "pruned": None}
        on_view: dict[str, torch.Tensor | None] = {"teacher": None, "pruned": None}
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
                net = getattr(self, name)
                if on_view[name] is None:
                    on_view[name] = self._once((name, aug), lambda: _frozen(net, view.x))
        return view

    @property
    def looks_ahead(self) -> bool:
        """True when the training loop should say which batch comes next (:meth:`upcoming`)."""
        return self._overlaps()

    def upcoming(self, x: torch.Tensor | None) -> None:
        """Called by the training loop before each step with the images of the step after it (None:
        the epoch's last step). The coming step then queues that batch's clean passes on the frozen
        networks' threads behind its own, so they run while this thread backpropagates and updates
        the student; the next step finds its teachers' clean logits computed or under way. Each
        network still sees the batches in order (its thread runs them in turn), so the pruned
        teacher's running statistics are the serial step's."""
        self._upcoming = x

    def _overlaps(self) -> bool:
        # A cohort shares its passes between runs, and a captured CUDA graph draws its view from
        # static tensors: both keep the serial order.
        return (self.frozen_threads is not None and self.shared is None and self.static_draw is None
                and any(name in self.frozen_threads for name in self._nets()))

    def _overlapped(self, student: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        """The step of ``__call__`` with the passes of the frozen networks that have a thread queued
        there first (clean, then view); this thread draws the view and runs the student and the other
        frozen networks meanwhile. Every value is the serial step's: only which thread computes it
        changes, and each network's passes keep their order."""
        batch, upcoming, self._upcoming = x, self._upcoming, None
        x = self._layout(x)
        aug = self.method.aug_view
        nets = {name: getattr(self, name) for name in self._nets()}
        away = [name for name in nets if name in self.frozen_threads]
        view_ready: Future = Future()
        ahead, self._ahead = self._ahead, {}
        if any(images is not batch for images, _ in ahead.values()):
            settle(future for _, future in ahead.values())
            raise RuntimeError("a step got other images than the ones announced to it (DistillObjective.upcoming): "
                               "the frozen networks already ran on those")
        clean_away = {name: ahead[name][1] if name in ahead else
                      self.frozen_threads.submit(name, functools.partial(_frozen, nets[name], x), x.device.type)
                      for name in away}
        view_away = {} if aug == "none" else {
            name: self.frozen_threads.submit(name, functools.partial(_frozen_on_view, nets[name], view_ready),
                                             x.device.type)
            for name in away}
        if upcoming is not None:
            # Behind this step's own passes on each thread, so a network's passes keep the batches' order.
            self._ahead = {name: (upcoming, self.frozen_threads.submit(
                name, functools.partial(_frozen, nets[name], self._layout(upcoming)), x.device.type)) for name in away}
        clean: dict[str, torch.Tensor | None] = {"teacher": None, "pruned": None}
        on_view: dict[str, torch.Tensor | None] = {"teacher": None, "pruned": None}

        def clean_logits(name: str) -> torch.Tensor:
            if clean[name] is None:
                clean[name] = clean_away[name].result() if name in away else _frozen(nets[name], x)
            return clean[name]

        try:
            view = None
            if aug == "cutmixpick":  # the view ranks the clean batch by the teacher's logits
                view = self._view(aug, x, clean_logits("teacher") if "teacher" in nets else None)
            elif aug != "none":
                view = self._view(aug, x, None)
            view_ready.set_result(view)
            student_clean = student(x)
            student_view = student(view.x) if view is not None else None
            for name in nets:
                clean_logits(name)
            terms = self._terms(student_clean, y, epoch, clean, clean=True)
            if view is not None:
                for name in nets:
                    on_view[name] = view_away[name].result() if name in away else _frozen(nets[name], view.x)
                labels = y if view.index is None else y[view.index]
                view_terms = self._terms(student_view, labels, epoch, on_view, clean=False)
                # Under autocast both views' passes share each weight's cached low-precision copy: one
                # node whose two gradients one backward pass adds in bf16, two passes in float32.
                if not torch.is_autocast_enabled(x.device.type):
                    self._views_of_terms = (list(terms), list(view_terms))
                terms.update(view_terms)
            return terms
        except BaseException:
            # No pass may outlive a failed step: neither this step's nor the next one's, queued ahead.
            ahead, self._ahead = self._ahead, {}
            if not view_ready.done():  # the step failed before its view: the view passes must not wait
                view_ready.set_exception(RuntimeError("the step ended before its augmented view was drawn"))
            settle([*clean_away.values(), *view_away.values(), *(future for _, future in ahead.values())])
            raise
        finally:
            settle([*clean_away.values(), *view_away.values()])

    def backward(self, terms: dict[str, torch.Tensor], student: torch.nn.Module) -> bool:
        """Backpropagate ``sum(terms.values())`` into the student's ``.grad`` as two backward passes
        side by side, one per view, if the last step was overlapped and had a view; False: nothing
        done, the caller backpropagates as usual.

        The same numbers: no term mixes the two views (a method scores each view on its own logits),
        and the two views' passes share no node but the student's parameters (not under autocast,
        whose cached weight casts both passes use: then this returns False), so each branch of the
        graph receives the gradients it receives in one backward pass, and each parameter's gradient
        is the sum of its two branches' in either case (one addition of two floats, which does not
        depend on their order). tests/test_overlap.py checks every registered student."""
        split, self._views_of_terms = self._views_of_terms, None
        if split is None or self.frozen_threads is None or set(terms) != {*split[0], *split[1]}:
            return False
        params = [p for p in student.parameters() if p.requires_grad]
        branches = [[terms[name] for name in names if terms[name].requires_grad] for names in split]
        if not all(branches):
            return False
        worker = next(name for name in HEAVIEST_FIRST if name in self.frozen_threads)
        on_view = self.frozen_threads.submit(worker, functools.partial(_grads, branches[1], params), "cpu")
        try:
            on_clean = _grads(branches[0], params)
        finally:
            settle([on_view])
        for p, clean_grad, view_grad in zip(params, on_clean, on_view.result()):
            p.grad = clean_grad if view_grad is None else view_grad if clean_grad is None else clean_grad + view_grad
        return True

    def _once(self, key: tuple[str, str], compute):
        return compute() if self.shared is None else self.shared.get(key, compute)

    # Where the fast path runs a frozen network's two views as one pass: where steps are launch-bound.
    # On the CPU one pass of 2B was measured slower than two of B.
    batch_views_on = ("cuda",)

    def _batch_views(self, net: torch.nn.Module, x: torch.Tensor, v: torch.Tensor) -> bool:
        return (self.fast and x.device.type in self.batch_views_on and v.shape[1:] == x.shape[1:]
                and v.dtype == x.dtype
                and (batch_independent(net) or (v.shape[0] == x.shape[0] and only_batch_norm_trains(net))))

    @staticmethod
    def _frozen_views(net: torch.nn.Module, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if batch_independent(net):
            return _frozen(net, torch.cat([x, v]))
        with per_view_statistics(net, 2):
            return _frozen(net, torch.cat([x, v]))

    def _view(self, aug: str, x: torch.Tensor, clean_teacher: torch.Tensor | None):
        if self.static_draw is not None:
            return apply_view(aug, x, self.static_draw)
        if self.teacher is None:
            logits_fn = None
        else:
            # cutmixpick ranks the clean batch by teacher entropy: those logits were computed already.
            def logits_fn(batch: torch.Tensor) -> torch.Tensor:
                return clean_teacher if (batch is x and clean_teacher is not None) else _frozen(self.teacher, batch)
        return make_view(aug, x, generator=self.view_generator, mean=self.mean, std=self.std, teacher_logits_fn=logits_fn,
                         autoaugment_per=self.method.params.autoaugment_per)

    def _losses(self, student, x, y, epoch, logits: dict, *, clean: bool) -> dict[str, torch.Tensor]:
        return self._terms(student(x), y, epoch, logits, clean=clean)

    def _terms(self, student_logits, y, epoch, logits: dict, *, clean: bool) -> dict[str, torch.Tensor]:
        return self.method.losses(student=student_logits, teacher=logits["teacher"], pruned=logits["pruned"], labels=y,
                                  clean=clean, epoch=epoch)
