"""Augmented views split in two halves, for a training step replayed as a CUDA graph.

A CUDA graph replays fixed kernels on fixed memory: it cannot draw new random numbers on the CPU
or cut a box whose size changes from step to step. So a view is split into

- :func:`draw_view`: every random number the view needs, drawn on the CPU from the view
  generator *in exactly the order* :func:`r2kd.augment.make_view` draws them, packed into
  fixed-shape tensors (the permutation, the box corners, the mixing weights); and
- :func:`apply_view`: the view computed from the batch and those tensors with fixed shapes
  only: the cutmix box is a mask over the image (``torch.where``), not a slice.

Selecting pixels through a mask picks the same values as assigning a slice, and the mixing
weights are the same float32 numbers the eager kernels use, so a view built from the two halves
equals ``make_view``'s bit for bit (tests/test_graphs.py) and leaves the generator in the same
state. Only the views with such a form are here; ``autoaugment`` (CPU PIL-style ops) and
``cutmixpick`` (a data-dependent number of rows) keep the eager path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from r2kd.augment import (
    CUTMIX_ALPHA,
    MIXUP_ALPHA,
    View,
    _beta,
    _randint,
    _square_box,
    cutmix_box,
    cutout_length,
)

Draw = dict[str, Tensor]  # CPU tensors of fixed shape; the graph runner copies them to the device

_DRAWS: dict[str, Callable[[tuple[int, ...], torch.Generator], Draw]] = {}
_APPLIES: dict[str, Callable[[Tensor, Draw], View]] = {}


def _register(name: str, draw, apply) -> None:
    _DRAWS[name], _APPLIES[name] = draw, apply


def static_views() -> frozenset[str]:
    """The views that a CUDA-graph step can build."""
    return frozenset(_DRAWS)


def draw_view(name: str, shape: tuple[int, ...], generator: torch.Generator) -> Draw:
    """The random numbers of view ``name`` for a batch of ``shape`` (N, C, H, W), from ``generator``."""
    if name not in _DRAWS:
        raise ValueError(f"view {name!r} has no fixed-shape form; fixed-shape views: {', '.join(sorted(_DRAWS))}")
    return _DRAWS[name](tuple(shape), generator)


def apply_view(name: str, x: Tensor, draw: Draw) -> View:
    """View ``name`` of ``x`` from ``draw`` (its tensors on ``x``'s device): fixed shapes only."""
    return _APPLIES[name](x, draw)


def _box_mask(x: Tensor, box: Tensor) -> Tensor:
    """(1, 1, H, W) mask of [y1, y2) × [x1, x2), ``box`` = (y1, y2, x1, x2) as a device tensor."""
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    return (rows >= box[0]) & (rows < box[1]) & (cols >= box[2]) & (cols < box[3])


# --- none ---------------------------------------------------------------------------------------
_register("none", lambda shape, g: {}, lambda x, d: View(x))


# --- mixup: λ, then the permutation (augment._mixup's order) ---------------------------------------
def _draw_mixup(shape: tuple[int, ...], g: torch.Generator) -> Draw:
    lam = _beta(MIXUP_ALPHA, MIXUP_ALPHA, g)
    perm = torch.randperm(shape[0], generator=g)
    # λ and 1 − λ rounded to float32 from the double values, as the eager kernels round their
    # Python-float scalars.
    return {"perm": perm, "weights": torch.tensor([lam, 1.0 - lam], dtype=torch.float32)}


def _apply_mixup(x: Tensor, d: Draw) -> View:
    w = d["weights"].to(x.dtype)
    return View(w[0] * x + w[1] * x[d["perm"]], perm=d["perm"])


_register("mixup", _draw_mixup, _apply_mixup)


# --- cutmix: λ, permutation, centre (augment._cutmix's order) -----------------------------------
def _draw_cutmix(shape: tuple[int, ...], g: torch.Generator) -> Draw:
    h, w = shape[-2:]
    lam = _beta(CUTMIX_ALPHA, CUTMIX_ALPHA, g)
    perm = torch.randperm(shape[0], generator=g)
    cy, cx = _randint(h, g), _randint(w, g)
    return {"perm": perm, "box": torch.tensor(cutmix_box(h, w, lam, cy, cx), dtype=torch.int64)}


def _apply_cutmix(x: Tensor, d: Draw) -> View:
    # lam is left out: the eager view's area-λ is a host float no loss reads (augment.View).
    return View(torch.where(_box_mask(x, d["box"]), x[d["perm"]], x), perm=d["perm"])


_register("cutmix", _draw_cutmix, _apply_cutmix)


# --- cutout: centre (augment._cutout's order) -----------------------------------------------------
def _draw_cutout(shape: tuple[int, ...], g: torch.Generator) -> Draw:
    h, w = shape[-2:]
    half = cutout_length(h, w) // 2
    cy, cx = _randint(h, g), _randint(w, g)
    return {"box": torch.tensor(_square_box(cy, cx, half, half, h, w), dtype=torch.int64)}


def _apply_cutout(x: Tensor, d: Draw) -> View:
    return View(x.masked_fill(_box_mask(x, d["box"]), 0))


_register("cutout", _draw_cutout, _apply_cutout)
