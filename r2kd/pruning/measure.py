"""How close the pruned teacher stays to the teacher (:func:`compare_many`: top-1, agreement, KL), and
how much faster it runs (:func:`speed`; wall-clock numbers go to timing files, never into a stage's
outputs). What the prune stage records with them: docs/prune.md.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from r2kd.pruning.bn import BnMode, set_bn_mode
from r2kd.runtime import autocast

TEMPERATURES = (1.0, 4.0)  # 4: the distillation temperature of every method here (METHOD.md)
Batch = tuple[torch.Tensor, torch.Tensor]  # images, labels


def frozen_copy(model: nn.Module, bn_mode: BnMode) -> nn.Module:
    """A frozen deep copy in ``bn_mode`` (set_bn_mode): the original's running statistics stay put."""
    return set_bn_mode(copy.deepcopy(model), bn_mode)


def _merge_singletons(batches: Iterable[Batch]) -> Iterator[Batch]:
    """Yield the batches, folding a trailing batch of one image into the one before it
    (train-mode BatchNorm cannot normalise a single image)."""
    held = None
    for x, y in batches:
        if held is not None and x.shape[0] == 1:
            x, y = torch.cat([held[0], x]), torch.cat([held[1], y])
        elif held is not None:
            yield held
        held = (x, y)
    if held is not None:
        yield held


@torch.no_grad()
def compare_many(teacher: nn.Module, others: dict[str, nn.Module], batches: Iterable[Batch], amp: str = "none",
                 temperatures: Sequence[float] = TEMPERATURES) -> dict[str, dict[str, float]]:
    """The teacher (in eval mode) against each of ``others`` on the same batches, one teacher forward per batch.

    Each other model runs in the mode it is in: pass :func:`frozen_copy` results, so that a train-mode-BN
    model's running statistics are not updated by scoring (its numbers then depend on the batches, which
    the caller fixes). Returns per model ``teacher_top1``, ``pruned_top1``, ``agreement`` (all %) and
    ``kl_t<T>`` for each temperature (mean over images of KL(softmax(z_t / T) || softmax(z_p / T)), no T²).
    """
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
    keys = ("teacher_top1", "pruned_top1", "agreement", *(f"kl_t{t:g}" for t in temperatures))
    scales = (100.0, 100.0, 100.0, *(1.0 for _ in temperatures))  # top-1 and agreement in %
    return {name: {k: scale * float(v) / total for k, scale, v in zip(keys, scales, row)} for name, row in sums.items()}


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
            start = time.perf_counter()
            model(x)
            sync()
            runs[key].append(time.perf_counter() - start)
    out = {k: 1000.0 * statistics.median(v) for k, v in runs.items()}
    out["speedup_eval"] = statistics.median(t / p for t, p in zip(runs["teacher_ms"], runs["pruned_eval_ms"]))
    if bn_mode == "train":
        out["speedup_bn_train"] = statistics.median(
            t / p for t, p in zip(runs["teacher_ms"], runs["pruned_bn_train_ms"]))
    return out
