"""Small helpers shared by the loss modules."""

from __future__ import annotations

import torch
from torch import Tensor

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def as_loss_dtype(z: Tensor) -> Tensor:
    """Upcast half-precision logits so softmax, norms and T² products are computed in float32.

    Under autocast the logits may arrive as float16/bfloat16; cosine terms with 100-200 small
    probabilities lose most of their digits there. float32/float64 inputs are left alone so the
    float64 tests (and gradcheck) see exactly the formula.
    """
    return z.float() if z.dtype in _LOW_PRECISION else z
