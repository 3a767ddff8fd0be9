"""Cross-entropy with hard labels: the supervised term every method shares."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from r2kd.losses._util import as_loss_dtype


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of ``logits`` (B, C) against integer ``labels`` (B,)."""
    return F.cross_entropy(as_loss_dtype(logits), labels)
