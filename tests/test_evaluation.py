"""The one evaluation pass (r2kd/evaluation.py) gives what the two loops it replaced gave: the
training loop's per-epoch test scores and the evaluate stage's eval.json scores (both as of
57a9794, written out below as references)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from r2kd import models
from r2kd.evaluation import evaluate

torch.set_num_threads(1)
STD = [0.3]


def _reference_train_scores(model, batches):  # r2kd/train.py::evaluate at 57a9794
    correct1 = correct5 = loss = 0
    total = 0
    for x, y in batches:
        logits = model(x).float()
        hit = logits.topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]
        correct1 += int(hit[:, 0].sum())
        correct5 += int(hit.any(dim=1).sum())
        loss += float(F.cross_entropy(logits, y, reduction="sum").double())
        total += y.numel()
    return {"top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total, "loss": loss / total}


def _reference_stage_scores(model, batches):  # r2kd/stages/evaluate.py::score at 57a9794
    noise_gen = torch.Generator().manual_seed(1234)
    std_t = torch.tensor(STD).view(1, -1, 1, 1)
    logits, noisy, labels = [], [], []
    for x, y in batches:
        logits.append(model(x).float())
        noisy.append(model(x + torch.randn(x.shape, generator=noise_gen) * 0.1 / std_t).float())
        labels.append(y)
    logits, noisy, labels = torch.cat(logits), torch.cat(noisy), torch.cat(labels)
    probs = logits.double().softmax(1)
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, 16, dtype=torch.float64)
    ece = torch.zeros((), dtype=torch.float64)
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += inside.double().mean() * (correct[inside].mean() - confidence[inside].mean()).abs()
    return {
        "top1": 100.0 * (logits.argmax(1) == labels).double().mean().item(),
        "nll": F.cross_entropy(logits.double(), labels).item(),
        "ece": float(ece),
        "noisy_top1": 100.0 * (noisy.argmax(1) == labels).double().mean().item(),
    }


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = models.create("resnet8", 10, in_channels=1, input_size=8)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)) for n in (32, 32, 7)]
    return model, batches


def test_scores_equal_both_old_loops(setup):
    model, batches = setup
    model.train()
    got = evaluate(model, batches, noise_std=0.1, data_std=STD)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        train, stage = _reference_train_scores(model, batches), _reference_stage_scores(model, batches)
    assert got["top1"] == train["top1"] == pytest.approx(stage["top1"], abs=1e-12)
    assert got["top5"] == train["top5"]
    assert got["nll"] == pytest.approx(stage["nll"], rel=1e-12)
    assert got["nll"] == pytest.approx(train["loss"], rel=1e-6)  # the old loop summed in float32
    assert got["ece"] == pytest.approx(stage["ece"], abs=1e-12) and got["ece"] > 0
    assert got["noisy_top1"] == pytest.approx(stage["noisy_top1"], abs=1e-12)


def test_noise_only_when_asked(setup):
    model, batches = setup
    assert set(evaluate(model, batches)) == {"top1", "top5", "nll", "ece"}


def test_ece_by_hand():
    # Two samples at confidence 0.9 (both right) and two at 0.6 (one right): ECE = (2·0.1 + 2·0.1) / 4.
    logit = lambda p: torch.log(torch.tensor([p, 1 - p]))  # noqa: E731
    rows = torch.stack([logit(0.9), logit(0.9), logit(0.6), logit(0.6)])
    labels = torch.tensor([0, 0, 0, 1])
    scores = evaluate(torch.nn.Identity(), [(rows, labels)])  # the "model" returns the logits
    assert scores["ece"] == pytest.approx(0.1, abs=1e-6)
    assert scores["top1"] == 75.0


@pytest.mark.parametrize("parts", [2, 3, 4])
def test_processes_sharing_the_test_set_score_what_one_process_scores(setup, parts):
    """`runtime.nproc_per_node` > 1: each process scores every parts-th batch (whole batches, so
    each sample's logits are one process's) and the float64 sums are added up across processes.
    Here the processes run one after the other and `reduce` adds what the others summed; with 4
    parts and 3 batches one process scores nothing."""
    model, batches = setup
    whole = evaluate(model, batches)
    shares = []

    def keep(sums: torch.Tensor) -> None:
        shares.append(sums.clone())
        sums[-1] += 1  # this call's own scores are not looked at; a share of no rows must not divide by 0

    for index in range(parts):
        evaluate(model, batches, part=(index, parts), reduce=keep)
    added = torch.stack(shares).sum(0)

    def add_up(sums: torch.Tensor) -> None:
        sums.copy_(added)

    split = evaluate(model, batches, part=(0, parts), reduce=add_up)
    assert split["top1"] == whole["top1"] and split["top5"] == whole["top5"]  # counts: exact
    assert split["nll"] == pytest.approx(whole["nll"], rel=1e-12) and split["ece"] == pytest.approx(whole["ece"])
    assert shares[0][-1] == 32 + (7 if parts == 2 else 0)  # process 0's share of the rows
    with pytest.raises(ValueError, match="split evaluation"):
        evaluate(model, batches, part=(0, 2))  # nothing to add the others' sums with
