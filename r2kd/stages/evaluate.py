"""Stage `evaluate`: score every final model (teachers, pruned teachers, students) on the test set.

Beyond top-1/top-5 it records calibration (ECE) and accuracy under Gaussian pixel noise, a cheap
robustness probe: R2KD claims robustness, so the report should show more than clean accuracy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from r2kd import paths
from r2kd.config import Params
from r2kd.files import write_json
from r2kd.pruning import load_pruned
from r2kd.runs import student_runs
from r2kd.runtime import resolve_amp, resolve_device, seed_everything, set_threads
from r2kd.stages.common import arch_spec, complexity, load_data, load_model
from r2kd.train import autocast

ECE_BINS = 15
NOISE_STD = 0.1  # in [0, 1] pixel units, before normalisation
NOISE_SEED = 1234


@torch.no_grad()
def score(model: torch.nn.Module, batches, mean, std, amp: str = "none") -> dict[str, float]:
    model.eval()
    device = next(model.parameters()).device
    noise_gen = torch.Generator().manual_seed(NOISE_SEED)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
    logits_all, noisy_all, labels_all = [], [], []
    for x, y in batches:
        with autocast(x.device, amp):
            logits_all.append(model(x).float().cpu())
            noise = torch.randn(x.shape, generator=noise_gen).to(device) * NOISE_STD / std_t
            noisy_all.append(model(x + noise).float().cpu())
        labels_all.append(y.cpu())
    logits, noisy, labels = torch.cat(logits_all), torch.cat(noisy_all), torch.cat(labels_all)
    k = min(5, logits.shape[1])
    return {
        "top1": 100.0 * (logits.argmax(1) == labels).double().mean().item(),
        "top5": 100.0 * (logits.topk(k, 1).indices == labels[:, None]).any(1).double().mean().item(),
        "nll": F.cross_entropy(logits.double(), labels).item(),
        "ece": expected_calibration_error(logits, labels),
        "noisy_top1": 100.0 * (noisy.argmax(1) == labels).double().mean().item(),
    }


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    probs = logits.double().softmax(1)
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    ece = torch.zeros((), dtype=torch.float64)
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += inside.double().mean() * (correct[inside].mean() - confidence[inside].mean()).abs()
    return float(ece)


def run(params: Params) -> None:
    set_threads(params.runtime.threads)
    device = resolve_device(params.runtime.device)
    seed_everything(0, params.runtime.deterministic)
    data = load_data(256, device, generator=None)
    mean, std = data.meta["mean"], data.meta["std"]
    amp = resolve_amp(params.runtime.amp, device)
    records = []

    def add(kind: str, model: torch.nn.Module, path, **fields) -> None:
        records.append({"kind": kind, "path": str(path), **fields, **score(model, data.test, mean, std, amp),
                        **complexity(model, data.input_shape)})

    for arch in params.teachers:
        path = paths.teacher_dir(arch) / "model.pt"
        add("teacher", load_model(path, arch_spec(arch, data.meta), device), path, arch=arch)
        path = paths.pruned_dir(arch) / "model.pt"
        pruned, _ = load_pruned(path, map_location=device)
        add("pruned_teacher", pruned.to(device), path, arch=arch, prune_method=params.prune.method,
            prune_ratio=params.prune.ratio)
    for run_ in student_runs(params):
        path = run_.dir / "model.pt"
        model = load_model(path, arch_spec(run_.student, data.meta), device)
        add("student", model, path, arch=run_.student, pair=run_.pair, teacher=run_.teacher, method=run_.method,
            augment=run_.augment, seed=run_.seed)
    write_json(paths.REPORTS / "eval.json", {"dataset": data.meta["name"], "noise_std": NOISE_STD, "models": records})
