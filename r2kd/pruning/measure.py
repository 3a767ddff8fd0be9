"""How close the pruned teacher stays to the teacher, and how much faster it runs.

:func:`compare` scores teacher and pruned teacher on the same batches: top-1 of each, their top-1
agreement (fraction of images where the argmaxes agree) and the mean KL(teacher || pruned) of the
softmax outputs at each temperature. The teacher runs in eval mode, as in distillation. The pruned
teacher runs in ``bn_mode``: ``"train"`` is what distillation does in the reference (BatchNorm on
batch statistics), and it runs on a deep copy so that its running statistics are not updated by
scoring; the numbers then depend on the batches (size and composition), which the caller fixes.

:func:`forward_ms` times forward passes (median of several runs); wall-clock numbers are not
results and go to timing files and benchmarks, never into a stage's outputs.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from r2kd.pruning.bn import BnMode, set_bn_mode
from r2kd.runtime import autocast

TEMPERATURES = (1.0, 4.0)  # 4: the distillation temperature of every method here (METHOD.md)


def frozen_copy(model: nn.Module, bn_mode: BnMode) -> nn.Module:
    """A frozen deep copy in ``bn_mode`` (set_bn_mode): the original's running statistics stay put."""
    return set_bn_mode(copy.deepcopy(model), bn_mode)


def _merge_singletons(batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Yield the batches, folding a trailing batch of one image into the one before it
    (train-mode BatchNorm cannot normalise a single image)."""
    held = None
    for x, y in batches:
        if held is not None and x.shape[0] == 1:
            held = (torch.cat([held[0], x]), torch.cat([held[1], y]))
            continue
        if held is not None:
            yield held
        held = (x, y)
    if held is not None:
        yield held


def compare(
    teacher: nn.Module,
    pruned: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    bn_mode: BnMode,
    amp: str = "none",
    temperatures: Sequence[float] = TEMPERATURES,
) -> dict[str, float]:
    """Teacher (eval mode) vs pruned teacher (``bn_mode``, on a deep copy) on the same batches.

    Returns ``teacher_top1``, ``pruned_top1``, ``agreement`` (all %) and ``kl_t<T>`` for each
    temperature (mean over images of KL(softmax(z_t / T) || softmax(z_p / T)), no T² factor).
    """
    return compare_many(teacher, {"pruned": frozen_copy(pruned, bn_mode)}, batches, amp, temperatures)["pruned"]


@torch.no_grad()
def compare_many(
    teacher: nn.Module,
    others: dict[str, nn.Module],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    amp: str = "none",
    temperatures: Sequence[float] = TEMPERATURES,
) -> dict[str, dict[str, float]]:
    """:func:`compare` for several models at once (each used in the mode it is in: pass
    :func:`frozen_copy` results), with one teacher forward per batch."""
    teacher_was_training = teacher.training
    teacher.eval()
    sums = {name: torch.zeros(3 + len(temperatures), dtype=torch.float64) for name in others}
    total = 0
    for x, y in _merge_singletons(batches):
        with autocast(x.device, amp):
            zt = teacher(x).double()
        pt = zt.argmax(1)
        log_ts = [F.log_softmax(zt / t, dim=1) for t in temperatures]
        for name, model in others.items():
            with autocast(x.device, amp):
                zp = model(x).double()
            pp = zp.argmax(1)
            row = [(pt == y).sum(), (pp == y).sum(), (pt == pp).sum()]
            for t, log_t in zip(temperatures, log_ts):
                row.append((log_t.exp() * (log_t - F.log_softmax(zp / t, dim=1))).sum())
            sums[name] += torch.stack([v.double().cpu() for v in row])
        total += y.numel()
    teacher.train(teacher_was_training)
    results = {}
    for name, total_sums in sums.items():
        out = {
            "teacher_top1": 100.0 * float(total_sums[0]) / total,
            "pruned_top1": 100.0 * float(total_sums[1]) / total,
            "agreement": 100.0 * float(total_sums[2]) / total,
        }
        for i, t in enumerate(temperatures):
            out[f"kl_t{t:g}"] = float(total_sums[3 + i]) / total
        results[name] = out
    return results


@torch.no_grad()
def forward_ms(model: nn.Module, x: torch.Tensor, *, repeats: int = 7, warmup: int = 2) -> float:
    """Median wall-clock milliseconds of one forward pass of ``x`` (synchronised on CUDA)."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        model(x)
    sync()
    return 1000.0 * statistics.median(_timed(model, x, sync) for _ in range(repeats))


def _timed(model: nn.Module, x: torch.Tensor, sync) -> float:
    start = time.perf_counter()
    model(x)
    sync()
    return time.perf_counter() - start


@torch.no_grad()
def speed(teacher: nn.Module, pruned: nn.Module, x: torch.Tensor, bn_mode: BnMode, *, repeats: int = 7,
          warmup: int = 1) -> dict[str, float]:
    """Forward ms of the teacher (eval) and the pruned teacher (eval, and train-mode BN if ``bn_mode``
    is train), each the median of ``repeats``; the speed-ups are medians of per-repeat ratios.

    The models take turns forward by forward, so a change in machine load (other jobs on a shared
    CPU) hits the teacher and the pruned teacher of one repeat alike and mostly cancels in the ratio.
    """
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    models = {"teacher_ms": frozen_copy(teacher, "eval"), "pruned_eval_ms": frozen_copy(pruned, "eval")}
    if bn_mode == "train":
        models["pruned_bn_train_ms"] = frozen_copy(pruned, "train")
    for _ in range(warmup):
        for model in models.values():
            model(x)
    sync()
    runs: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(repeats):
        for key, model in models.items():
            runs[key].append(_timed(model, x, sync))
    out = {k: 1000.0 * statistics.median(v) for k, v in runs.items()}
    out["speedup_eval"] = statistics.median(t / p for t, p in zip(runs["teacher_ms"], runs["pruned_eval_ms"]))
    if bn_mode == "train":
        out["speedup_bn_train"] = statistics.median(t / p for t, p in zip(runs["teacher_ms"], runs["pruned_bn_train_ms"]))
    return out
