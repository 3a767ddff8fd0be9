"""R2KD (Kim et al., TKDE 2024, arXiv 2311.13934), METHOD.md §1–4: CE on the clean view; value and
rank terms on both views against the mix of the teacher's and the pruned teacher's logits.

  z_tgt   = w · z_t + (1 − w) · z_p                                   (§1, mixed on logits)
  d(A, B) = 1 − (1/n) Σ_i |⟨a_i, b_i⟩| / (‖a_i‖·‖b_i‖ + 1e-8)          (uncentred |cosine|)
  L_value = alpha · T² · ( d(P_s, P_t) + d(P_sᵀ, P_tᵀ) )               (§2, inter + intra)
  L_rank  = beta · (1 − (1/B) Σ_i spearman(P_s[i], P_t[i]))            (§3, no T², inter only)

Rank modes:
- ``hard`` (the reference): ranks by a double argsort; integer ranks carry no gradient, so the
  term is a logged constant as far as the optimiser is concerned.
- ``soft``: pairwise-sigmoid ranks r_j = 1 + Σ_{k≠j} σ(s·(x_j − x_k)), where x is the row of
  log-probabilities standardised to zero mean and unit variance. Ranks of P, log P and z are the
  same, so this changes nothing in the hard limit; the standardisation makes ``sharpness`` s a
  unit-free number ("how many row standard deviations make a difference decisive") that does not
  depend on T, on the logit scale or on the number of classes. s → ∞ recovers the hard ranks.
  Both sides use soft ranks, so identical inputs give ρ = 1 exactly (loss 0), as with hard ranks.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from r2kd.method_params.r2kd import R2KDParams
from r2kd.methods._common import EPS, as_loss_dtype, pearson_rows
from r2kd.methods.base import Method

RankMode = Literal["hard", "soft"]


def mix_teacher_logits(z_t: Tensor, z_p: Tensor, w: float) -> Tensor:
    """w · z_t + (1 − w) · z_p: ``w`` goes to the original teacher, the rest to the pruned copy."""
    return w * z_t + (1.0 - w) * z_p


def correlation_distance(a: Tensor, b: Tensor, eps: float = EPS) -> Tensor:
    """1 − mean over rows of |cos(a_i, b_i)|, uncentred (not Pearson), ``eps`` on the norm product."""
    cos = (a * b).sum(dim=1).abs() / (a.norm(dim=1) * b.norm(dim=1) + eps)
    return 1.0 - cos.mean()


def value_loss(z_s: Tensor, z_tgt: Tensor, temperature: float, alpha: float) -> Tensor:
    """alpha · T² · (inter-class + intra-class correlation distance) between softened predictions."""
    z_s, z_tgt = as_loss_dtype(z_s), as_loss_dtype(z_tgt)
    p_s = F.softmax(z_s / temperature, dim=1)
    p_t = F.softmax(z_tgt / temperature, dim=1)
    return _value_from_probs(p_s, p_t, temperature, alpha)


def _value_from_probs(p_s: Tensor, p_t: Tensor, temperature: float, alpha: float) -> Tensor:
    inter = correlation_distance(p_s, p_t)
    intra = correlation_distance(p_s.transpose(0, 1), p_t.transpose(0, 1))
    return alpha * temperature**2 * (inter + intra)


def hard_ranks(x: Tensor) -> Tensor:
    """1-based ranks along dim 1 by double argsort (ties broken by position); no gradient."""
    order = torch.argsort(x, dim=1, stable=True)
    return (torch.argsort(order, dim=1, stable=True) + 1).to(x.dtype)


def soft_ranks(x: Tensor, sharpness: float) -> Tensor:
    """Pairwise-sigmoid ranks along dim 1: r_j = 1 + Σ_{k≠j} σ(sharpness · (x_j − x_k)).

    The self term σ(0) = 1/2 is removed explicitly. Memory is B·C² (64·100² floats = 2.6 MB).
    """
    diff = x.unsqueeze(2) - x.unsqueeze(1)  # [b, j, k] = x_j − x_k
    return 0.5 + torch.sigmoid(sharpness * diff).sum(dim=2)


def _standardise_rows(x: Tensor, eps: float = EPS) -> Tensor:
    x = x - x.mean(dim=1, keepdim=True)
    return x / (x.pow(2).mean(dim=1, keepdim=True).sqrt() + eps)


def spearman_rows(
    z_s: Tensor, z_t: Tensor, temperature: float, mode: RankMode = "hard", sharpness: float = 10.0
) -> Tensor:
    """Spearman ρ per row between P_s and P_t = softmax(z / T): Pearson of their rank vectors."""
    z_s, z_t = as_loss_dtype(z_s), as_loss_dtype(z_t)
    if mode == "hard":
        # Ranked on P as the reference does; identical to ranking z except for float ties.
        r_s = hard_ranks(F.softmax(z_s / temperature, dim=1))
        r_t = hard_ranks(F.softmax(z_t / temperature, dim=1))
    elif mode == "soft":
        r_s = soft_ranks(_standardise_rows(F.log_softmax(z_s / temperature, dim=1)), sharpness)
        r_t = soft_ranks(_standardise_rows(F.log_softmax(z_t / temperature, dim=1)), sharpness)
    else:
        raise ValueError(f"rank mode must be 'hard' or 'soft', got {mode!r}")
    return pearson_rows(r_s, r_t, EPS)


def rank_loss(
    z_s: Tensor, z_tgt: Tensor, temperature: float, beta: float, mode: RankMode = "hard", sharpness: float = 10.0
) -> Tensor:
    """beta · (1 − mean_i ρ_i). In ``hard`` mode the result has no autograd history."""
    return beta * (1.0 - spearman_rows(z_s, z_tgt, temperature, mode, sharpness).mean())


def r2kd_terms(
    z_s: Tensor, z_tgt: Tensor, temperature: float, alpha: float, beta: float, mode: RankMode = "hard",
    sharpness: float = 10.0,
) -> tuple[Tensor, Tensor]:
    """(:func:`value_loss`, :func:`rank_loss`) of one view, bit for bit, with the softened predictions
    P_s and P_t computed once: the hard rank term ranks the same P the value term compares, so it
    reuses them instead of taking both softmaxes again (tests/test_method_numerics.py)."""
    if mode != "hard":
        return (value_loss(z_s, z_tgt, temperature, alpha),
                rank_loss(z_s, z_tgt, temperature, beta, mode, sharpness))
    z_s, z_tgt = as_loss_dtype(z_s), as_loss_dtype(z_tgt)
    p_s = F.softmax(z_s / temperature, dim=1)
    p_t = F.softmax(z_tgt / temperature, dim=1)
    value = _value_from_probs(p_s, p_t, temperature, alpha)
    rho = pearson_rows(hard_ranks(p_s.detach()), hard_ranks(p_t), EPS)
    return value, beta * (1.0 - rho.mean())


class R2KD(Method):
    name: ClassVar[str] = "r2kd"
    Params: ClassVar[type[R2KDParams]] = R2KDParams
    params: R2KDParams

    def target(self, teacher: Tensor, pruned: Tensor | None) -> Tensor:
        if pruned is None:
            if self.params.teacher_weight == 1.0:  # ablation without the pruned teacher
                return teacher
            raise ValueError("r2kd needs pruned-teacher logits unless teacher_weight == 1")
        return mix_teacher_logits(teacher, pruned, self.params.teacher_weight)

    def terms(self, *, student: Tensor, teacher: Tensor, pruned: Tensor | None, labels: Tensor,
              epoch: int) -> dict[str, Tensor]:
        p = self.params
        z_tgt = self.target(teacher, pruned)
        value, rank = r2kd_terms(student, z_tgt, p.temperature, p.alpha, p.beta, p.rank, p.rank_sharpness)
        return {"value": value, "rank": rank}
