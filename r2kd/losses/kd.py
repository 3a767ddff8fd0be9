"""Hinton knowledge distillation (arXiv 1503.02531).

L_KD = T² · (1/B) Σ_i KL(P_t[i] ‖ P_s[i]),  P = softmax(z / T).

The T² factor keeps the gradient magnitude of the soft term independent of T (Hinton et al. §2);
``batchmean`` matches mdistiller's ``kl_div(...).sum(1).mean()``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from r2kd.losses._util import as_loss_dtype


def kd_loss(z_s: Tensor, z_t: Tensor, temperature: float) -> Tensor:
    """KL(P_t ‖ P_s) at temperature ``temperature``, averaged over the batch, times T²."""
    z_s, z_t = as_loss_dtype(z_s), as_loss_dtype(z_t)
    log_p_s = F.log_softmax(z_s / temperature, dim=1)
    # log_target avoids 0·log 0 = NaN when a teacher probability underflows to zero.
    log_p_t = F.log_softmax(z_t / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2
