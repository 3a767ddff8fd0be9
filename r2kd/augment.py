"""The extra augmented view of every batch (METHOD.md §6; docs/losses.md), built on the *normalised*
batch, every random number drawn on the CPU from the caller's generator (the same view on any device).
The fixed-shape views are written in two halves, :func:`draw` (their random numbers) and :func:`apply`
(fixed shapes only: a box is a mask, not a slice), so that the eager step and the CUDA graph
(r2kd.fast.graphs) build the same view the same way.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from torchvision.transforms import AutoAugmentPolicy

MIXUP_ALPHA = 0.2  # λ ~ Beta(0.2, 0.2)  [REF]
CUTMIX_ALPHA = 1.0  # λ ~ Beta(1, 1)     [REF]
CUTMIXPICK_K = 64  # keep the k highest-entropy samples; k = min(B, 64)  [REF]
AUTOAUGMENT_SMALL_MAX_SIDE = 32  # CIFAR10 policy up to 32 px, IMAGENET policy above  [REF]


@dataclass(frozen=True)
class View:
    """One augmented view ``x`` of a batch (its dtype and device). ``index``: the rows of the clean batch
    it holds (ascending; only cutmixpick drops rows), to subset labels and teacher logits with; None:
    all, in order. ``perm``: for mixup/cutmix(pick), the partner of each *original* row."""

    x: Tensor
    index: Tensor | None = None
    perm: Tensor | None = None


@dataclass(frozen=True)
class _Ctx:
    generator: torch.Generator
    mean: tuple[float, ...]
    std: tuple[float, ...]
    teacher_logits_fn: Callable[[Tensor], Tensor] | None
    pick_entropy_on: Literal["clean", "view"]
    autoaugment_per: Literal["batch", "image"]


# --- random draws: all from the CPU generator -------------------------------------------------
def _randint(high: int, g: torch.Generator) -> int:
    return int(torch.randint(high, (1,), generator=g).item())


def _beta(a: float, b: float, g: torch.Generator) -> float:
    """One Beta(a, b) draw from a numpy generator seeded from ``g`` (torch's Beta takes no generator)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=g).item())
    return float(np.random.default_rng(seed).beta(a, b))


def _square_box(cy: int, cx: int, half_h: int, half_w: int, h: int, w: int) -> tuple[int, int, int, int]:
    """[y1, y2) × [x1, x2) centred at (cy, cx), clipped to the image (as the reference)."""
    y1, y2 = min(max(cy - half_h, 0), h), min(max(cy + half_h, 0), h)
    x1, x2 = min(max(cx - half_w, 0), w), min(max(cx + half_w, 0), w)
    return y1, y2, x1, x2


def cutmix_box(h: int, w: int, lam: float, cy: int, cx: int) -> tuple[int, int, int, int]:
    """Box of side ⌊√(1 − λ)·side⌋ centred at (cy, cx), half-sides by floor division, clipped."""
    cut = math.sqrt(1.0 - lam)
    return _square_box(cy, cx, int(h * cut) // 2, int(w * cut) // 2, h, w)


def cutout_length(h: int, w: int) -> int:
    """Hole side: 8 px at 32×32 and 16 px at 64×64 [REF], i.e. a quarter of the side; ≥ 1 px."""
    return max(1, min(h, w) // 4)


# --- the views of a fixed shape: draw, then apply ----------------------------------------------

Draw = dict[str, Tensor]  # CPU tensors of fixed shape, from draw(); apply() reads them on x's device


def fixed_shape_views() -> frozenset[str]:
    """The views with a draw/apply form: those a CUDA-graph step can build."""
    return frozenset(_DRAWS)


def draw(name: str, shape: Sequence[int], generator: torch.Generator) -> Draw:
    """The random numbers of view ``name`` for a batch of ``shape`` (N, C, H, W), from ``generator``."""
    if name not in _DRAWS:
        raise ValueError(f"view {name!r} has no fixed-shape form; fixed-shape views: {', '.join(sorted(_DRAWS))}")
    return _DRAWS[name](tuple(shape), generator)


def apply(name: str, x: Tensor, drawn: Draw) -> View:
    """View ``name`` of ``x`` from ``drawn`` (its tensors on ``x``'s device): fixed shapes only."""
    return _APPLIES[name](x, drawn)


def _drawn_and_applied(name: str, x: Tensor, ctx: _Ctx) -> View:
    """The eager view ``name`` of a fixed shape: drawn, then applied at once."""
    drawn = draw(name, x.shape, ctx.generator)
    return apply(name, x, {key: value.to(x.device) for key, value in drawn.items()})


def _box_mask(x: Tensor, box: Tensor) -> Tensor:
    """(1, 1, H, W) mask of [y1, y2) × [x1, x2), ``box`` = (y1, y2, x1, x2) as a tensor on x's device."""
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    return (rows >= box[0]) & (rows < box[1]) & (cols >= box[2]) & (cols < box[3])


def _draw_mixup(shape: tuple[int, ...], g: torch.Generator) -> Draw:
    lam = _beta(MIXUP_ALPHA, MIXUP_ALPHA, g)
    perm = torch.randperm(shape[0], generator=g)
    # λ and 1 − λ rounded to float32 from the double values, as kernels round Python-float scalars.
    return {"perm": perm, "weights": torch.tensor([lam, 1.0 - lam], dtype=torch.float32)}


def _apply_mixup(x: Tensor, d: Draw) -> View:
    w = d["weights"].to(x.dtype)
    return View(w[0] * x + w[1] * x[d["perm"]], perm=d["perm"])


def _draw_cutmix(shape: tuple[int, ...], g: torch.Generator) -> Draw:
    h, w = shape[-2:]
    lam = _beta(CUTMIX_ALPHA, CUTMIX_ALPHA, g)
    perm = torch.randperm(shape[0], generator=g)
    cy, cx = _randint(h, g), _randint(w, g)
    return {"perm": perm, "box": torch.tensor(cutmix_box(h, w, lam, cy, cx), dtype=torch.int64)}


def _apply_cutmix(x: Tensor, d: Draw) -> View:
    return View(torch.where(_box_mask(x, d["box"]), x[d["perm"]], x), perm=d["perm"])


def _draw_cutout(shape: tuple[int, ...], g: torch.Generator) -> Draw:
    h, w = shape[-2:]
    half = cutout_length(h, w) // 2
    cy, cx = _randint(h, g), _randint(w, g)
    return {"box": torch.tensor(_square_box(cy, cx, half, half, h, w), dtype=torch.int64)}


def _apply_cutout(x: Tensor, d: Draw) -> View:
    # 0 in normalised space = the dataset mean colour; the reference multiplies by a 0/1 mask.
    return View(x.masked_fill(_box_mask(x, d["box"]), 0))


_DRAWS: dict[str, Callable[[tuple[int, ...], torch.Generator], Draw]] = {
    "none": lambda shape, g: {}, "mixup": _draw_mixup, "cutmix": _draw_cutmix, "cutout": _draw_cutout}
_APPLIES: dict[str, Callable[[Tensor, Draw], View]] = {
    "none": lambda x, d: View(x), "mixup": _apply_mixup, "cutmix": _apply_cutmix, "cutout": _apply_cutout}


# --- the views drawn and applied at once (eager only) ------------------------------------------
def _stats(values: Sequence[float], x: Tensor) -> Tensor:
    if len(values) != x.shape[1]:
        raise ValueError(f"normalisation has {len(values)} channels, the batch has {x.shape[1]}")
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


def autoaugment_policy(h: int, w: int) -> "AutoAugmentPolicy":
    """CIFAR10 policy for images up to 32 px (CIFAR, digits), IMAGENET above (Tiny-ImageNet)."""
    from torchvision.transforms import AutoAugmentPolicy  # the same enum as torchvision v2's

    return AutoAugmentPolicy.CIFAR10 if max(h, w) <= AUTOAUGMENT_SMALL_MAX_SIDE else AutoAugmentPolicy.IMAGENET


def to_pixels(x: Tensor, mean: Tensor, std: Tensor, rounding: Literal["truncate", "round"]) -> Tensor:
    """De-normalised uint8 pixels in [0, 255], truncated (the reference's ``.to(torch.uint8)``) or rounded."""
    pixels = (x.detach().float().cpu() * std + mean).mul(255.0)
    if rounding == "round":
        pixels = pixels.round()
    return pixels.clamp(0, 255).to(torch.uint8)


def _autoaugment(x: Tensor, ctx: _Ctx) -> View:
    mean, std = _stats(ctx.mean, x), _stats(ctx.std, x)
    policy = autoaugment_policy(*x.shape[-2:])
    # The ops run on the CPU: 32-64 px images are launch-bound on a GPU, and CPU uint8 kernels
    # make the view bit-identical whatever device the batch came from.
    seed = int(torch.randint(0, 2**62, (1,), generator=ctx.generator).item())
    # [REF] "batch": torchvision v1 AutoAugment on the whole uint8 batch tensor, one sub-policy (ops, magnitudes,
    # signs, apply/skip draws) for every image of the batch, pixels truncated. "image": torchvision v2 on each
    # image on its own, pixels rounded.
    per_image = ctx.autoaugment_per == "image"
    if per_image:
        from torchvision.transforms import v2 as transforms
    else:
        from torchvision import transforms
    pixels = to_pixels(x, mean, std, "round" if per_image else "truncate")
    augment = transforms.AutoAugment(policy)
    # torchvision draws its sub-policy and magnitudes from the global CPU RNG; fork it so that
    # the draws come from our seed and the caller's global stream is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = torch.stack([augment(img) for img in pixels]) if per_image else augment(pixels)
    return View(((out.float().div(255.0) - mean) / std).to(device=x.device, dtype=x.dtype))


def _cutmixpick(x: Tensor, ctx: _Ctx) -> View:
    if ctx.teacher_logits_fn is None:
        raise ValueError("cutmixpick needs teacher_logits_fn (teacher logits for a batch)")
    mixed = VIEWS["cutmix"](x, ctx)
    k = min(x.shape[0], CUTMIXPICK_K)
    if k == x.shape[0]:
        return mixed  # every row kept: no teacher pass needed
    with torch.no_grad():
        # [REF] ranks the *clean* batch by teacher entropy; "view" ranks the mixed samples.
        log_p = F.log_softmax(ctx.teacher_logits_fn(x if ctx.pick_entropy_on == "clean" else mixed.x).float(), dim=1)
        entropy = -(log_p.exp() * log_p).sum(dim=1)
    keep = torch.topk(entropy, k).indices.sort().values.to(x.device)
    return View(mixed.x[keep], index=keep, perm=mixed.perm)


VIEWS: dict[str, Callable[[Tensor, _Ctx], View]] = {
    **{name: functools.partial(_drawn_and_applied, name) for name in _DRAWS},
    "autoaugment": _autoaugment, "cutmixpick": _cutmixpick}


def make_view(name: str, x: Tensor, *, generator: torch.Generator, mean: Sequence[float], std: Sequence[float],
              teacher_logits_fn: Callable[[Tensor], Tensor] | None = None,
              pick_entropy_on: Literal["clean", "view"] = "clean",
              autoaugment_per: Literal["batch", "image"] = "batch") -> View:
    """View ``name`` of the normalised batch ``x`` (N, C, H, W), ``generator`` (CPU) its only randomness,
    ``mean``/``std`` its normalisation (for autoaugment: one sub-policy per batch, as the reference, or
    per image); ``teacher_logits_fn`` (batch -> teacher logits) is what cutmixpick ranks by."""
    if name not in VIEWS:
        raise ValueError(f"unknown augmented view {name!r}; known: {', '.join(sorted(VIEWS))}")
    if generator.device.type != "cpu":
        raise ValueError("make_view needs a CPU torch.Generator (views must not depend on the device)")
    if x.dim() != 4:
        raise ValueError(f"expected a (N, C, H, W) batch, got shape {tuple(x.shape)}")
    if autoaugment_per not in ("batch", "image"):
        raise ValueError(f"autoaugment_per must be 'batch' or 'image', got {autoaugment_per!r}")
    ctx = _Ctx(generator, tuple(mean), tuple(std), teacher_logits_fn, pick_entropy_on, autoaugment_per)
    return VIEWS[name](x, ctx)

