"""R2KD (Kim et al., TKDE 2024, arXiv 2311.13934), METHOD.md §1–4: CE on the clean view; value and
rank terms on both views against the mix of the teacher's and the pruned teacher's logits.
Formulas, and the soft ranks of ``rank: soft`` (why log P is standardised first): docs/losses.md.
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


def _softened(z_s: Tensor, z_t: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    z_s, z_t = as_loss_dtype(z_s), as_loss_dtype(z_t)
    return F.softmax(z_s / temperature, dim=1), F.softmax(z_t / temperature, dim=1)


def value_loss(z_s: Tensor, z_tgt: Tensor, temperature: float, alpha: float) -> Tensor:
    """alpha · T² · (inter-class + intra-class correlation distance) between softened predictions."""
    return _value_from_probs(*_softened(z_s, z_tgt, temperature), temperature, alpha)


def _value_from_probs(p_s: Tensor, p_t: Tensor, temperature: float, alpha: float) -> Tensor:
    inter = correlation_distance(p_s, p_t)
    intra = correlation_distance(p_s.transpose(0, 1), p_t.transpose(0, 1))
    return alpha * temperature**2 * (inter + intra)


def _rank_from_ranks(r_s: Tensor, r_t: Tensor, beta: float) -> Tensor:
    """beta · (1 − mean Spearman ρ): Pearson of the rank vectors, row by row."""
    return beta * (1.0 - pearson_rows(r_s, r_t, EPS).mean())


def hard_ranks(x: Tensor) -> Tensor:
    """1-based ranks along dim 1 by double argsort (ties broken by position); no gradient."""
    order = torch.argsort(x, dim=1, stable=True)
    return (torch.argsort(order, dim=1, stable=True) + 1).to(x.dtype)


def soft_ranks(x: Tensor, sharpness: float) -> Tensor:
    """Pairwise-sigmoid ranks along dim 1: r_j = 1 + Σ_{k≠j} σ(sharpness · (x_j − x_k)), the self term
    σ(0) = 1/2 removed. Memory is B·C² (64·100² floats = 2.6 MB)."""
    diff = x.unsqueeze(2) - x.unsqueeze(1)  # [b, j, k] = x_j − x_k
    return 0.5 + torch.sigmoid(sharpness * diff).sum(dim=2)


def _standardise_rows(x: Tensor, eps: float = EPS) -> Tensor:
    x = x - x.mean(dim=1, keepdim=True)
    return x / (x.pow(2).mean(dim=1, keepdim=True).sqrt() + eps)


def rank_loss(z_s: Tensor, z_tgt: Tensor, temperature: float, beta: float, mode: RankMode = "hard",
              sharpness: float = 10.0) -> Tensor:
    """beta · (1 − mean_i ρ_i), ρ_i the Spearman ρ of P_s[i] and P_t[i], P = softmax(z / T). In
    ``hard`` mode the result has no autograd history."""
    if mode == "hard":
        # Ranked on P as the reference does; identical to ranking z except for float ties.
        return _rank_from_ranks(*map(hard_ranks, _softened(z_s, z_tgt, temperature)), beta)
    if mode != "soft":
        raise ValueError(f"rank mode must be 'hard' or 'soft', got {mode!r}")
    z_s, z_tgt = as_loss_dtype(z_s), as_loss_dtype(z_tgt)
    r_s = soft_ranks(_standardise_rows(F.log_softmax(z_s / temperature, dim=1)), sharpness)
    r_t = soft_ranks(_standardise_rows(F.log_softmax(z_tgt / temperature, dim=1)), sharpness)
    return _rank_from_ranks(r_s, r_t, beta)


def r2kd_terms(z_s: Tensor, z_tgt: Tensor, temperature: float, alpha: float, beta: float, mode: RankMode = "hard",
               sharpness: float = 10.0) -> tuple[Tensor, Tensor]:
    """(:func:`value_loss`, :func:`rank_loss`) of one view, bit for bit; in ``hard`` mode the rank term
    ranks the P_s and P_t the value term compares, computed once (tests/test_method_numerics.py)."""
    if mode != "hard":
        return (value_loss(z_s, z_tgt, temperature, alpha),
                rank_loss(z_s, z_tgt, temperature, beta, mode, sharpness))
    p_s, p_t = _softened(z_s, z_tgt, temperature)
    value = _value_from_probs(p_s, p_t, temperature, alpha)
    return value, _rank_from_ranks(hard_ranks(p_s.detach()), hard_ranks(p_t), beta)


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
