"""DKD: "Decoupled Knowledge Distillation" (Zhao et al., arXiv 2203.08679), with mdistiller's
defaults: CE + warm-up · (1·TCKD + 8·NCKD), T = 4. Formulas, and why the target column is dropped
instead of mdistiller's ``z/T − 1000·mask`` and the clean labels split the augmented view: docs/losses.md.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from r2kd.method_params.dkd import DKDParams
from r2kd.methods._common import as_loss_dtype
from r2kd.methods.base import Method


def _split_target(log_p: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Split (B, C) log-probabilities into the target column (B,) and the rest (B, C−1)."""
    # Gathers, not boolean-mask indexing: the same values in the same order, but with shapes known
    # without reading the mask on the host, so the step can be captured as a CUDA graph.
    b, c = log_p.shape
    target = log_p.gather(1, labels[:, None]).squeeze(1)
    columns = torch.arange(c - 1, device=log_p.device).expand(b, c - 1)
    others = log_p.gather(1, columns + (columns >= labels[:, None]).long())
    return target, others


def _binary_log_probs(z: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """log [p_gt, 1 − p_gt] computed stably from logits (B, 2)."""
    log_p = F.log_softmax(z / temperature, dim=1)
    target, others = _split_target(log_p, labels)
    # log(1 − p_gt) = logsumexp of the non-target log-probabilities: no cancellation near p_gt = 1.
    return torch.stack([target, torch.logsumexp(others, dim=1)], dim=1)


def _kl_batchmean(log_p_s: Tensor, log_p_t: Tensor) -> Tensor:
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


def tckd_loss(z_s: Tensor, z_t: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Target-class KD: KL between the binary (target, non-target) distributions, times T²."""
    z_s, z_t = as_loss_dtype(z_s), as_loss_dtype(z_t)
    kl = _kl_batchmean(_binary_log_probs(z_s, labels, temperature), _binary_log_probs(z_t, labels, temperature))
    return kl * temperature**2


def nckd_loss(z_s: Tensor, z_t: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Non-target-class KD: KL between the distributions over the C − 1 other classes, times T²."""
    z_s, z_t = as_loss_dtype(z_s), as_loss_dtype(z_t)
    _, zs_other = _split_target(z_s / temperature, labels)
    _, zt_other = _split_target(z_t / temperature, labels)
    kl = _kl_batchmean(F.log_softmax(zs_other, dim=1), F.log_softmax(zt_other, dim=1))
    return kl * temperature**2


def dkd_loss(z_s: Tensor, z_t: Tensor, labels: Tensor, *, alpha: float, beta: float, temperature: float) -> Tensor:
    """alpha · TCKD + beta · NCKD (no warm-up; see :func:`dkd_warmup_factor`)."""
    return alpha * tckd_loss(z_s, z_t, labels, temperature) + beta * nckd_loss(z_s, z_t, labels, temperature)


def dkd_warmup_factor(epoch: int, warmup: int) -> float:
    """min(epoch / warmup, 1) with mdistiller's 1-based epochs; ``warmup <= 0`` disables it."""
    return min(max(epoch, 0) / warmup, 1.0) if warmup > 0 else 1.0


class DKD(Method):
    name: ClassVar[str] = "dkd"
    Params: ClassVar[type[DKDParams]] = DKDParams
    params: DKDParams

    def terms(self, *, student: Tensor, teacher: Tensor, pruned: Tensor | None, labels: Tensor,
              epoch: int) -> dict[str, Tensor]:
        p = self.params
        factor = dkd_warmup_factor(epoch, p.warmup)
        return {"dkd": factor * dkd_loss(student, teacher, labels, alpha=p.alpha, beta=p.beta, temperature=p.temperature)}
