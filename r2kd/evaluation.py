"""One pass over the test set that gives every score recorded anywhere: the per-epoch test columns
of the training log, the prune stage's before/after accuracy and the evaluate stage's eval.json.

Scores: top-1 and top-5 accuracy (%), mean cross-entropy (``nll``), expected calibration error
(``ece``, 15 equal-width confidence bins) and, when ``noise_std`` is given, top-1 under Gaussian
pixel noise (``noisy_top1``), a cheap robustness probe. Running sums stay on the device and come
to the host once per pass, not once per batch.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from r2kd.runtime import autocast

ECE_BINS = 15
NOISE_SEED = 1234  # the noise is the same for every model scored


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    amp: str = "none",
    *,
    noise_std: float | None = None,
    data_std: Sequence[float] | None = None,
) -> dict[str, float]:
    """Scores of ``model`` on a fixed-order test iterator; ``noise_std`` is in [0, 1] pixel units,
    ``data_std`` the per-channel normalisation of the batches (the noise is added after it)."""
    was_training = model.training
    model.eval()
    noise_gen = torch.Generator().manual_seed(NOISE_SEED)
    sums: torch.Tensor | None = None
    total = 0
    for x, y in batches:
        with autocast(x.device, amp):
            logits = model(x).float()
            noisy = None
            if noise_std is not None:
                std = torch.tensor(data_std, device=x.device).view(1, -1, 1, 1)
                noisy = model(x + torch.randn(x.shape, generator=noise_gen).to(x.device) * noise_std / std).float()
        batch = _batch_sums(logits, y, noisy)
        sums = batch if sums is None else sums + batch
        total += y.numel()
    model.train(was_training)
    top1, top5, nll, noisy_top1, *bins = sums.tolist()  # the one host sync
    count, correct, confidence = bins[:ECE_BINS], bins[ECE_BINS:2 * ECE_BINS], bins[2 * ECE_BINS:]
    scores = {
        "top1": 100.0 * top1 / total,
        "top5": 100.0 * top5 / total,
        "nll": nll / total,
        # Σ_b (n_b / N) · |accuracy_b − confidence_b| over the non-empty bins
        "ece": sum(abs(c - p) / total for n, c, p in zip(count, correct, confidence) if n),
    }
    if noise_std is not None:
        scores["noisy_top1"] = 100.0 * noisy_top1 / total
    return scores


def _batch_sums(logits: torch.Tensor, labels: torch.Tensor, noisy: torch.Tensor | None) -> torch.Tensor:
    """[top-1 hits, top-5 hits, summed CE, noisy top-1 hits, per-bin count, correct, confidence] (float64)."""
    hit = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
    confidence, predicted = logits.double().softmax(1).max(1)
    edges = torch.linspace(0, 1, ECE_BINS + 1, dtype=torch.float64).to(logits.device)
    # bucketize: edges[i-1] < confidence <= edges[i]; index 0 (confidence 0) belongs to no bin
    in_bin = F.one_hot(torch.bucketize(confidence, edges), ECE_BINS + 1)[:, 1:].double()
    noisy_hits = (noisy.argmax(1) == labels).sum() if noisy is not None else torch.zeros((), device=logits.device)
    head = torch.stack([
        hit[:, 0].sum().double(),
        hit.any(dim=1).sum().double(),
        F.cross_entropy(logits.double(), labels, reduction="sum"),
        noisy_hits.double(),
    ])
    correct = (predicted == labels).double()
    return torch.cat([head, in_bin.sum(0), (in_bin * correct[:, None]).sum(0), (in_bin * confidence[:, None]).sum(0)])
