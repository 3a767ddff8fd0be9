"""Numeric helpers the methods' loss functions share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-8


def as_loss_dtype(z: Tensor) -> Tensor:
    """Upcast half-precision logits (autocast): cosine terms of 100-200 small probabilities lose most
    of their digits in float16/bfloat16. float32/float64 are left alone (float64 tests, gradcheck)."""
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of ``logits`` (B, C) against integer ``labels`` (B,): every method's CE term."""
    return F.cross_entropy(as_loss_dtype(logits), labels)


def pearson_rows(a: Tensor, b: Tensor, eps: float = EPS) -> Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (returns shape (rows,))."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)
