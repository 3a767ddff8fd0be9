"""Loss functions against hand-worked numbers and explicit float64 loops (never against themselves)."""

from __future__ import annotations

import math

import pytest
import torch

from r2kd.methods._common import cross_entropy
from r2kd.methods.dist import dist_loss
from r2kd.methods.dkd import dkd_loss, dkd_warmup_factor, nckd_loss, tckd_loss
from r2kd.methods.kd import kd_loss
from r2kd.methods.r2kd import correlation_distance, hard_ranks, mix_teacher_logits, rank_loss, soft_ranks, value_loss

torch.set_num_threads(1)
D = torch.float64


def _logits(b: int, c: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(b, c, generator=g, dtype=D)


# --- explicit reference formulas on Python lists ------------------------------------------------


def _softmax(row: list[float], t: float = 1.0) -> list[float]:
    m = max(v / t for v in row)
    e = [math.exp(v / t - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def _pearson(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    num = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    den = math.sqrt(sum((x - ma) ** 2 for x in a)) * math.sqrt(sum((y - mb) ** 2 for y in b))
    return num / (den + 1e-8)


def _abs_cos(a: list[float], b: list[float]) -> float:
    num = abs(sum(x * y for x, y in zip(a, b)))
    return num / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)) + 1e-8)


def _cols(m: list[list[float]]) -> list[list[float]]:
    return [list(col) for col in zip(*m)]


def _spearman_formula(a: list[float], b: list[float]) -> float:
    """Textbook 1 − 6Σd²/(n(n²−1)) for distinct values: independent of any Pearson code."""
    n = len(a)
    ra = {i: r + 1 for r, i in enumerate(sorted(range(n), key=lambda k: a[k]))}
    rb = {i: r + 1 for r, i in enumerate(sorted(range(n), key=lambda k: b[k]))}
    return 1 - 6 * sum((ra[i] - rb[i]) ** 2 for i in range(n)) / (n * (n * n - 1))


# --- CE and KD -----------------------------------------------------------------------------------


def test_cross_entropy_matches_loop():
    z, y = _logits(5, 7, 0), torch.tensor([0, 6, 3, 3, 1])
    expected = sum(-math.log(_softmax(row)[label]) for row, label in zip(z.tolist(), y.tolist())) / 5
    assert cross_entropy(z, y).item() == pytest.approx(expected, rel=1e-12)


def test_kd_hand_worked():
    # P_s = [.5, .5], P_t = [.75, .25]: KL = .75 ln 1.5 + .25 ln .5 = 0.1308120...
    z_s = torch.tensor([[0.0, 0.0]], dtype=D)
    z_t = torch.tensor([[math.log(3.0), 0.0]], dtype=D)
    assert kd_loss(z_s, z_t, 1.0).item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-12)
    # Scaling logits by T and dividing by T inside the loss leaves the KL alone: only T² remains.
    assert kd_loss(4 * z_s, 4 * z_t, 4.0).item() == pytest.approx(16 * 0.1308120, rel=1e-6)


def test_kd_matches_loop():
    z_s, z_t, t = _logits(6, 5, 1), _logits(6, 5, 2), 4.0
    expected = t * t * sum(_kl(_softmax(b, t), _softmax(a, t)) for a, b in zip(z_s.tolist(), z_t.tolist())) / 6
    assert kd_loss(z_s, z_t, t).item() == pytest.approx(expected, rel=1e-10)


# --- DIST ----------------------------------------------------------------------------------------


def test_dist_matches_loop():
    z_s, z_t, t, beta, gamma = _logits(6, 5, 3), _logits(6, 5, 4), 4.0, 2.0, 3.0
    ps = [_softmax(r, t) for r in z_s.tolist()]
    pt = [_softmax(r, t) for r in z_t.tolist()]
    inter = 1 - sum(_pearson(a, b) for a, b in zip(ps, pt)) / len(ps)
    intra = 1 - sum(_pearson(a, b) for a, b in zip(_cols(ps), _cols(pt))) / len(ps[0])
    expected = t * t * (beta * inter + gamma * intra)
    assert dist_loss(z_s, z_t, t, beta, gamma).item() == pytest.approx(expected, rel=1e-9)


def test_dist_is_zero_for_identical_inputs():
    z = _logits(4, 6, 5)
    # Up to the 1e-8 added to the norm product (centred probabilities have small norms).
    assert dist_loss(z, z, 4.0, 2.0, 2.0).item() == pytest.approx(0.0, abs=1e-4)


# --- DKD -----------------------------------------------------------------------------------------


def _dkd_loop(z_s, z_t, labels, alpha, beta, t):
    tckd = nckd = 0.0
    for a, b, y in zip(z_s.tolist(), z_t.tolist(), labels.tolist()):
        ps, pt = _softmax(a, t), _softmax(b, t)
        tckd += _kl([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]])
        others_s = [p for k, p in enumerate(ps) if k != y]
        others_t = [p for k, p in enumerate(pt) if k != y]
        ns, nt = sum(others_s), sum(others_t)
        nckd += _kl([p / nt for p in others_t], [p / ns for p in others_s])
    n = len(labels)
    return t * t * tckd / n, t * t * nckd / n, t * t * (alpha * tckd + beta * nckd) / n


def test_dkd_matches_loop():
    z_s, z_t, labels = _logits(5, 6, 6), _logits(5, 6, 7), torch.tensor([0, 5, 2, 2, 4])
    tckd, nckd, total = _dkd_loop(z_s, z_t, labels, 1.0, 8.0, 4.0)
    assert tckd_loss(z_s, z_t, labels, 4.0).item() == pytest.approx(tckd, rel=1e-9)
    assert nckd_loss(z_s, z_t, labels, 4.0).item() == pytest.approx(nckd, rel=1e-9)
    assert dkd_loss(z_s, z_t, labels, alpha=1.0, beta=8.0, temperature=4.0).item() == pytest.approx(total, rel=1e-9)


def test_dkd_matches_mdistiller_mask_trick():
    # mdistiller's form: softmax(z/T − 1000·gt_mask) for NCKD, masked sums for TCKD.
    z_s, z_t, labels, t = _logits(4, 5, 8), _logits(4, 5, 9), torch.tensor([1, 0, 4, 2]), 4.0
    gt = torch.nn.functional.one_hot(labels, 5).to(D)
    ps, pt = torch.softmax(z_s / t, 1), torch.softmax(z_t / t, 1)
    bs = torch.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
    bt = torch.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
    tckd = (bt * (bt.log() - bs.log())).sum() / 4 * t * t
    ls2 = torch.log_softmax(z_s / t - 1000 * gt, 1)
    pt2 = torch.softmax(z_t / t - 1000 * gt, 1)
    nckd = torch.nn.functional.kl_div(ls2, pt2, reduction="sum") / 4 * t * t
    ours = dkd_loss(z_s, z_t, labels, alpha=1.0, beta=8.0, temperature=t)
    assert ours.item() == pytest.approx((tckd + 8 * nckd).item(), rel=1e-9)


@pytest.mark.parametrize(
    ("epoch", "warmup", "expected"), [(0, 20, 0.0), (1, 20, 0.05), (10, 20, 0.5), (20, 20, 1.0), (240, 20, 1.0), (3, 0, 1.0)]
)
def test_dkd_warmup_factor(epoch, warmup, expected):
    assert dkd_warmup_factor(epoch, warmup) == pytest.approx(expected)


# --- R2KD: target, correlation distance, value term ---------------------------------------------


def test_mix_teacher_logits_hand_worked():
    z_t = torch.tensor([[1.0, 2.0]], dtype=D)
    z_p = torch.tensor([[3.0, -1.0]], dtype=D)
    # 0.7·[1, 2] + 0.3·[3, −1] = [1.6, 1.1]
    assert torch.allclose(mix_teacher_logits(z_t, z_p, 0.7), torch.tensor([[1.6, 1.1]], dtype=D))


def test_correlation_distance_hand_worked():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=D)
    b = torch.tensor([[0.0, 1.0], [-1.0, -1.0]], dtype=D)
    # row 0: orthogonal → 0; row 1: |−2| / (√2·√2) = 1 → d = 1 − 0.5
    assert correlation_distance(a, b).item() == pytest.approx(0.5, abs=1e-8)


def test_correlation_distance_is_uncentred_not_pearson():
    a = torch.tensor([[1.0, 2.0, 3.0]], dtype=D)
    b = torch.tensor([[2.0, 3.0, 4.0]], dtype=D)  # Pearson = 1, cosine = 20/√(14·29)
    assert correlation_distance(a, b).item() == pytest.approx(1 - 20 / math.sqrt(14 * 29), rel=1e-6)
    assert correlation_distance(a, b).item() > 1e-3


def test_correlation_distance_properties():
    a, b = _logits(5, 7, 10), _logits(5, 7, 11)
    assert correlation_distance(a, b).item() == pytest.approx(correlation_distance(b, a).item(), rel=1e-12)
    assert correlation_distance(a, a).item() == pytest.approx(0.0, abs=1e-8)
    assert correlation_distance(a, -a).item() == pytest.approx(0.0, abs=1e-8)  # |cos| ignores the sign
    assert correlation_distance(a, 3.5 * b).item() == pytest.approx(correlation_distance(a, b).item(), rel=1e-9)
    assert 0.0 <= correlation_distance(a, b).item() <= 1.0


def test_value_loss_matches_loop():
    z_s, z_t, t, alpha = _logits(6, 5, 12), _logits(6, 5, 13), 4.0, 2.0
    ps = [_softmax(r, t) for r in z_s.tolist()]
    pt = [_softmax(r, t) for r in z_t.tolist()]
    inter = 1 - sum(_abs_cos(a, b) for a, b in zip(ps, pt)) / len(ps)
    intra = 1 - sum(_abs_cos(a, b) for a, b in zip(_cols(ps), _cols(pt))) / len(ps[0])
    expected = alpha * t * t * (inter + intra)
    assert value_loss(z_s, z_t, t, alpha).item() == pytest.approx(expected, rel=1e-9)


def test_value_loss_invariant_to_a_constant_per_row():
    z_s, z_t = _logits(4, 6, 14), _logits(4, 6, 15)
    shift_s = torch.tensor([[5.0], [-3.0], [0.5], [100.0]], dtype=D)
    shift_t = torch.tensor([[-7.0], [2.0], [11.0], [0.0]], dtype=D)
    base = value_loss(z_s, z_t, 4.0, 2.0).item()
    assert value_loss(z_s + shift_s, z_t + shift_t, 4.0, 2.0).item() == pytest.approx(base, rel=1e-10)
    # Not exactly 0: the 1e-8 in the denominator, relative to small probability norms, times α·T².
    assert value_loss(z_s, z_s, 4.0, 2.0).item() == pytest.approx(0.0, abs=1e-4)


# --- R2KD: rank term -----------------------------------------------------------------------------


def test_hard_ranks_hand_worked():
    x = torch.tensor([[0.3, -1.0, 2.0, 0.0]], dtype=D)
    assert hard_ranks(x).tolist() == [[3.0, 1.0, 4.0, 2.0]]


def test_rank_loss_hand_worked_reversed_order():
    z_s = torch.tensor([[0.0, 1.0, 2.0]], dtype=D)
    z_t = torch.tensor([[2.0, 1.0, 0.0]], dtype=D)  # ranks reversed: ρ = −1 → β·(1 − (−1)) = 2β
    assert rank_loss(z_s, z_t, 4.0, 2.0).item() == pytest.approx(4.0, abs=1e-7)
    assert rank_loss(z_s, z_s, 4.0, 2.0).item() == pytest.approx(0.0, abs=1e-7)


def test_hard_rank_loss_matches_spearman_formula():
    z_s, z_t, beta = _logits(8, 10, 16), _logits(8, 10, 17), 2.0
    rhos = [_spearman_formula(a, b) for a, b in zip(z_s.tolist(), z_t.tolist())]
    expected = beta * (1 - sum(rhos) / len(rhos))
    assert rank_loss(z_s, z_t, 4.0, beta, "hard").item() == pytest.approx(expected, rel=1e-7)


def test_hard_rank_gives_no_gradient_soft_rank_does():
    z_s = _logits(4, 6, 18).requires_grad_()
    z_t = _logits(4, 6, 19)
    hard = rank_loss(z_s, z_t, 4.0, 2.0, "hard")
    assert not hard.requires_grad and hard.item() > 0
    soft = rank_loss(z_s, z_t, 4.0, 2.0, "soft", 10.0)
    (grad,) = torch.autograd.grad(soft, z_s)
    assert grad.abs().sum().item() > 1e-6


def test_soft_ranks_hand_worked():
    s = 3.0
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    x = torch.tensor([[0.0, 1.0, 3.0]], dtype=D)
    expected = [[1 + sig(-s) + sig(-3 * s), 1 + sig(s) + sig(-2 * s), 1 + sig(3 * s) + sig(2 * s)]]
    assert torch.allclose(soft_ranks(x, s), torch.tensor(expected, dtype=D), atol=1e-12)
    # Soft ranks keep the sum of hard ranks: n(n+1)/2.
    assert soft_ranks(x, s).sum().item() == pytest.approx(6.0, abs=1e-12)


def test_soft_rank_approaches_hard_rank():
    z_s, z_t = _logits(16, 20, 20), _logits(16, 20, 21)
    hard = rank_loss(z_s, z_t, 4.0, 2.0, "hard").item()
    gaps = [abs(rank_loss(z_s, z_t, 4.0, 2.0, "soft", s).item() - hard) for s in (1.0, 10.0, 100.0, 1e4)]
    assert all(later < earlier for earlier, later in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 1e-4
    assert rank_loss(z_s, z_s, 4.0, 2.0, "soft", 10.0).item() == pytest.approx(0.0, abs=1e-7)


def test_rank_loss_rejects_unknown_mode():
    z = _logits(2, 3, 22)
    with pytest.raises(ValueError, match="rank mode"):
        rank_loss(z, z, 4.0, 2.0, "medium")  # type: ignore[arg-type]


# --- gradients -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn",
    [
        lambda s, t, y: kd_loss(s, t, 4.0),
        lambda s, t, y: dist_loss(s, t, 4.0, 2.0, 2.0),
        lambda s, t, y: dkd_loss(s, t, y, alpha=1.0, beta=8.0, temperature=4.0),
        lambda s, t, y: value_loss(s, t, 4.0, 2.0),
        lambda s, t, y: rank_loss(s, t, 4.0, 2.0, "soft", 5.0),
        lambda s, t, y: cross_entropy(s, y),
    ],
    ids=["kd", "dist", "dkd", "value", "soft_rank", "ce"],
)
def test_gradcheck(fn):
    z_s = _logits(4, 5, 23, scale=1.5).requires_grad_()
    z_t = _logits(4, 5, 24, scale=1.5)
    y = torch.tensor([0, 4, 2, 1])
    assert torch.autograd.gradcheck(lambda s: fn(s, z_t, y), (z_s,), eps=1e-6, atol=1e-6)


def test_half_precision_logits_are_upcast():
    z_s, z_t = _logits(8, 10, 25).float(), _logits(8, 10, 26).float()
    ref = value_loss(z_s, z_t, 4.0, 2.0)
    low = value_loss(z_s.bfloat16(), z_t.bfloat16(), 4.0, 2.0)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(ref.item(), rel=5e-2)
