"""One pass over the test set gives every score recorded anywhere (log columns, prune stage, eval.json):
top-1 and top-5 (%), mean cross-entropy (``nll``), ``ece`` (15 equal-width bins) and, given ``noise_std``,
``noisy_top1`` under Gaussian pixel noise; the running sums come to the host once per pass.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from r2kd.runtime import autocast

ECE_BINS = 15
NOISE_SEED = 1234  # the noise is the same for every model scored


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], amp: str = "none", *,
             noise_std: float | None = None, data_std: Sequence[float] | None = None,
             logits_out: list[torch.Tensor] | None = None, part: tuple[int, int] = (0, 1),
             reduce: Callable[[torch.Tensor], None] | None = None) -> dict[str, float]:
    """Scores of ``model`` on a fixed-order test iterator; ``noise_std`` is in [0, 1] pixel units,
    ``data_std`` the normalisation of the batches (the noise is added after it). ``logits_out``, if
    given, receives the clean logits of every batch (float32, CPU). ``part`` = (i, n): this process
    scores batches i, i+n, …; ``reduce`` sums the float64 sums over the processes (docs/distributed.md)."""
    index, parts = part
    if parts > 1 and (noise_std is not None or logits_out is not None or reduce is None):
        raise ValueError("a split evaluation needs reduce, and draws no noise and keeps no logits")
    was_training = model.training
    model.eval()
    noise_gen = torch.Generator().manual_seed(NOISE_SEED)
    sums: torch.Tensor | None = None
    total = 0
    for number, (x, y) in enumerate(batches):
        if number % parts != index:
            continue
        with autocast(x.device, amp):
            logits = model(x).float()
            noisy = None
            if noise_std is not None:
                std = torch.tensor(data_std, device=x.device).view(1, -1, 1, 1)
                noisy = model(x + torch.randn(x.shape, generator=noise_gen).to(x.device) * noise_std / std).float()
        if logits_out is not None:
            logits_out.append(logits.cpu())
        batch = _batch_sums(logits, y, noisy)
        sums = batch if sums is None else sums + batch
        total += y.numel()
    model.train(was_training)
    if reduce is not None:
        if sums is None:  # fewer batches than processes: this one scored none
            sums = torch.zeros(4 + 3 * ECE_BINS, dtype=torch.float64, device=next(model.parameters()).device)
        sums = torch.cat([sums, sums.new_tensor([total])])
        reduce(sums)
        sums, total = sums[:-1], int(sums[-1].item())
    top1, top5, nll, noisy_top1, *bins = sums.tolist()  # the one host sync
    scores = {"top1": 100.0 * top1 / total, "top5": 100.0 * top5 / total, "nll": nll / total, "ece": _ece(bins, total)}
    if noise_std is not None:
        scores["noisy_top1"] = 100.0 * noisy_top1 / total
    return scores


def _ece(bins: Sequence[float], total: int) -> float:
    """Σ_b (n_b / N) · |accuracy_b − confidence_b| over the non-empty bins (``bins``: counts, hits, confidences)."""
    count, correct, confidence = bins[:ECE_BINS], bins[ECE_BINS:2 * ECE_BINS], bins[2 * ECE_BINS:]
    return sum(abs(c - p) / total for n, c, p in zip(count, correct, confidence) if n)


def _batch_sums(logits: torch.Tensor, labels: torch.Tensor, noisy: torch.Tensor | None) -> torch.Tensor:
    """[top-1 hits, top-5 hits, summed CE, noisy top-1 hits, per-bin count, correct, confidence] (float64)."""
    hit = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
    confidence, predicted = logits.double().softmax(1).max(1)
    edges = torch.linspace(0, 1, ECE_BINS + 1, dtype=torch.float64).to(logits.device)
    # bucketize: edges[i-1] < confidence <= edges[i]; index 0 (confidence 0) belongs to no bin
    in_bin = F.one_hot(torch.bucketize(confidence, edges), ECE_BINS + 1)[:, 1:].double()
    noisy_hits = (noisy.argmax(1) == labels).sum() if noisy is not None else torch.zeros((), device=logits.device)
    head = torch.stack([hit[:, 0].sum().double(), hit.any(dim=1).sum().double(),
                        F.cross_entropy(logits.double(), labels, reduction="sum"), noisy_hits.double()])
    correct = (predicted == labels).double()
    return torch.cat([head, in_bin.sum(0), (in_bin * correct[:, None]).sum(0), (in_bin * confidence[:, None]).sum(0)])


# --- scores computed from logits (the evaluate stage's robustness, fidelity and calibration) ----------
@torch.no_grad()
def predict(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], amp: str = "none") -> torch.Tensor:
    """The logits of ``model`` on every batch, in order, as one float32 CPU tensor."""
    was_training = model.training
    model.eval()
    out = []
    for x, _ in batches:
        with autocast(x.device, amp):
            out.append(model(x).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (logits.argmax(1) == labels).double().mean().item()


def calibration(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> dict[str, float]:
    """ECE (15 equal-width bins, as in ``evaluate``) and NLL of softmax(logits / temperature)."""
    sums = _batch_sums(logits.double() / temperature, labels, None)
    return {"ece": _ece(sums[4:].tolist(), labels.numel()), "nll": sums[2].item() / labels.numel()}


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, low: float = 0.05, high: float = 20.0,
                    steps: int = 80) -> float:
    """The temperature T minimising the NLL of softmax(logits / T): golden-section search on log T
    (the NLL is convex in 1/T), in float64, deterministic."""
    z = logits.double()

    def nll(log_t: float) -> float:
        return F.cross_entropy(z / math.exp(log_t), labels).item()

    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(steps):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(d)
    return math.exp((a + b) / 2)


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Top-1 agreement (%) of two models' logits on the same images (Stanton et al., 2021)."""
    return 100.0 * (a.argmax(1) == b.argmax(1)).double().mean().item()


def kl_divergence(teacher: torch.Tensor, student: torch.Tensor) -> float:
    """Mean KL(p_teacher || p_student) over images, in nats, at temperature 1."""
    log_t, log_s = teacher.double().log_softmax(1), student.double().log_softmax(1)
    return (log_t.exp() * (log_t - log_s)).sum(1).mean().item()
