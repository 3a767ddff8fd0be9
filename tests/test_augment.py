"""The augmented view: geometry of each view, seeding, dtype/device, and cutmixpick's subset."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from r2kd.files import sha256_state_dict
from r2kd.augment import (
    to_pixels,
    CUTMIXPICK_K,
    VIEWS,
    autoaugment_policy,
    cutmix_box,
    cutout_length,
    draw,
    make_view,
)

torch.set_num_threads(1)
MEAN3, STD3 = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _constant_batch(n: int, c: int = 3, side: int = 32, dtype=torch.float32) -> torch.Tensor:
    """Sample i is the constant i + 1 everywhere: every pixel says which sample it came from."""
    return (torch.arange(n, dtype=dtype) + 1).view(n, 1, 1, 1).expand(n, c, side, side).clone()


def _view(name, x, seed=0, **kw):
    kw.setdefault("mean", MEAN3[: x.shape[1]])
    kw.setdefault("std", STD3[: x.shape[1]])
    return make_view(name, x, generator=_gen(seed), **kw)


def _entropy_teacher(x: torch.Tensor) -> torch.Tensor:
    # Logits [m, 0, 0, 0] with m the sample mean: entropy falls as m grows.
    m = x.mean(dim=(1, 2, 3))
    return torch.stack([m, torch.zeros_like(m), torch.zeros_like(m), torch.zeros_like(m)], dim=1)


def test_none_is_identity():
    x = torch.randn(4, 3, 8, 8)
    view = _view("none", x)
    assert view.x is x and view.index is None


def test_mixup_is_the_stated_convex_mix():
    x = _constant_batch(8)
    view = _view("mixup", x, seed=3)
    lam, perm = draw("mixup", x.shape, _gen(3))["weights"][0].item(), view.perm
    assert 0.0 <= lam <= 1.0
    assert sorted(perm.tolist()) == list(range(8))
    expected = lam * (torch.arange(8.0) + 1) + (1 - lam) * (perm.float() + 1)
    assert torch.allclose(view.x, expected.view(8, 1, 1, 1).expand_as(x))


def test_mixup_lambda_is_beta_02_02():
    lams = torch.stack([draw("mixup", (2, 1, 2, 2), _gen(s))["weights"][0] for s in range(2000)])
    # Beta(0.2, 0.2): mean 1/2, variance ab/((a+b)²(a+b+1)) = 0.04/(0.16·1.4) = 0.1786; U-shaped.
    assert lams.mean().item() == pytest.approx(0.5, abs=0.03)
    assert lams.var().item() == pytest.approx(0.1786, abs=0.015)
    assert ((lams < 0.1) | (lams > 0.9)).float().mean().item() > 0.5


def test_cutmix_box_hand_worked():
    # λ = 0.75 → side √0.25·32 = 16, half 8; centre (10, 30): rows 2..18, columns 22..38 → 32.
    assert cutmix_box(32, 32, 0.75, 10, 30) == (2, 18, 22, 32)
    assert cutmix_box(32, 32, 1.0, 5, 5) == (5, 5, 5, 5)  # λ = 1: empty box
    assert cutmix_box(32, 32, 0.0, 16, 16) == (0, 32, 0, 32)  # λ = 0: the whole image


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_pastes_one_box_from_the_permuted_sample(seed):
    n = 6
    x = _constant_batch(n)
    view = _view("cutmix", x, seed=seed)
    own = (torch.arange(n, dtype=torch.float32) + 1).view(n, 1, 1, 1)
    changed = view.x != own  # (n, C, H, W)
    partners = []
    for i in range(n):
        values = set(view.x[i].unique().tolist())
        foreign = values - {float(i + 1)}
        assert len(foreign) <= 1  # at most one other sample is pasted in
        partners.append(int(foreign.pop()) - 1 if foreign else None)
    # The pasted region is read from x[perm]: check it pixel by pixel where perm[i] != i.
    perm = view.perm
    for i in range(n):
        if perm[i].item() != i:
            assert partners[i] == perm[i].item()
    # One rectangle, the same for every sample and channel (where the partner differs).
    region = None
    for i in range(n):
        if perm[i].item() == i:
            assert not changed[i].any()
            continue
        mask = changed[i, 0]
        assert (changed[i] == mask).all()
        region = mask if region is None else region
        assert (mask == region).all()
    if region is not None and region.any():
        rows, cols = region.any(1).nonzero().flatten(), region.any(0).nonzero().flatten()
        box = region[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all()  # a filled rectangle


def test_cutout_one_hole_same_place_for_the_whole_batch():
    seen_full_size = False
    for seed in range(20):
        x = torch.ones(5, 3, 32, 32)
        view = _view("cutout", x, seed=seed)
        hole = view.x == 0
        assert (hole == hole[0, 0]).all()  # same place in every sample and channel
        rows, cols = hole[0, 0].any(1).nonzero().flatten(), hole[0, 0].any(0).nonzero().flatten()
        assert rows.numel() > 0
        assert hole[0, 0, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        assert hole[0, 0].sum() == rows.numel() * cols.numel()
        assert rows.numel() <= 8 and cols.numel() <= 8
        seen_full_size |= rows.numel() == 8 and cols.numel() == 8
        assert (view.x[~hole] == 1).all()
    assert seen_full_size


@pytest.mark.parametrize(("side", "length"), [(32, 8), (64, 16), (8, 2), (2, 1)])
def test_cutout_length(side, length):
    assert cutout_length(side, side) == length


def test_autoaugment_policy_by_size():
    assert autoaugment_policy(32, 32) == v2.AutoAugmentPolicy.CIFAR10
    assert autoaugment_policy(8, 8) == v2.AutoAugmentPolicy.CIFAR10
    assert autoaugment_policy(64, 64) == v2.AutoAugmentPolicy.IMAGENET


@pytest.mark.parametrize("channels", [1, 3])
def test_autoaugment_per_sample_on_pixels(channels):
    mean, std = MEAN3[:channels], STD3[:channels]
    g = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (1, channels, 16, 16), generator=g).float() / 255
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    x = ((pixels - m) / s).expand(16, -1, -1, -1).contiguous()  # 16 copies of one image
    view = _view("autoaugment", x, seed=2, mean=mean, std=std, autoaugment_per="image")
    assert view.x.shape == x.shape and view.x.dtype == x.dtype and view.index is None
    back = view.x * s + m
    assert back.min() >= -1e-5 and back.max() <= 1 + 1e-5
    assert torch.allclose(back * 255, (back * 255).round(), atol=1e-3)  # uint8 grid
    # Per-sample sub-policies: identical inputs do not all come out the same.
    distinct = {tuple(v.flatten().tolist()) for v in view.x}
    assert len(distinct) > 1


def test_autoaugment_rejects_wrong_normalisation():
    with pytest.raises(ValueError, match="channels"):
        make_view("autoaugment", torch.zeros(2, 3, 8, 8), generator=_gen(), mean=(0.5,), std=(0.5,))


def test_cutmixpick_keeps_all_rows_up_to_k():
    x = _constant_batch(CUTMIXPICK_K, side=4)
    calls = []
    pick = _view("cutmixpick", x, seed=5, teacher_logits_fn=lambda b: calls.append(b) or _entropy_teacher(b))
    plain = _view("cutmix", x, seed=5)
    assert pick.index is None and torch.equal(pick.x, plain.x)
    assert not calls  # nothing to pick: no teacher pass


def test_cutmixpick_keeps_the_top_k_by_clean_teacher_entropy():
    n = CUTMIXPICK_K + 6
    x = _constant_batch(n, side=4)
    pick = _view("cutmixpick", x, seed=5, teacher_logits_fn=_entropy_teacher)
    plain = _view("cutmix", x, seed=5)
    # Entropy falls with the sample value i + 1: the 64 highest-entropy rows are 0..63.
    assert pick.index.tolist() == list(range(CUTMIXPICK_K))
    assert torch.equal(pick.x, plain.x[pick.index])


def test_cutmixpick_can_rank_the_mixed_view():
    n = CUTMIXPICK_K + 6
    x = _constant_batch(n, side=4)
    seen = []
    _view("cutmixpick", x, seed=5, teacher_logits_fn=lambda b: seen.append(b) or _entropy_teacher(b),
          pick_entropy_on="view")
    assert torch.equal(seen[0], _view("cutmix", x, seed=5).x)


def test_cutmixpick_needs_a_teacher():
    with pytest.raises(ValueError, match="teacher_logits_fn"):
        _view("cutmixpick", torch.zeros(4, 3, 4, 4))


@pytest.mark.parametrize("name", sorted(VIEWS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_seed_same_view_dtype_device_and_global_rng_untouched(name, dtype):
    x = torch.randn(6, 3, 8, 8, generator=_gen(9)).to(dtype)
    kw = {"teacher_logits_fn": _entropy_teacher}
    state = torch.get_rng_state()
    a = _view(name, x, seed=4, **kw)
    b = _view(name, x, seed=4, **kw)
    assert torch.equal(torch.get_rng_state(), state)  # only the given generator is consumed
    assert torch.equal(a.x, b.x)
    assert a.x.dtype == dtype and a.x.device == x.device
    if name != "none":
        assert not torch.equal(a.x, x) or name == "autoaugment"  # autoaugment may draw an identity
        assert a.x is not x  # the clean batch is never modified in place
    assert torch.equal(x, torch.randn(6, 3, 8, 8, generator=_gen(9)).to(dtype))


def test_different_seeds_give_different_views():
    x = torch.randn(6, 3, 8, 8, generator=_gen(9))
    for name in ("mixup", "cutmix", "cutout", "autoaugment"):
        views = {tuple(_view(name, x, seed=s).x.flatten().tolist()[:64]) for s in range(4)}
        assert len(views) > 1, name


def test_make_view_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown augmented view"):
        _view("randaugment", torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="N, C, H, W"):
        _view("cutmix", torch.zeros(3, 4, 4))


# --- autoaugment: one sub-policy per batch (the reference) or per image ------------------------


def _reference_autoaugment_batch(x, seed, mean, std):
    """What the reference does: torchvision v1 AutoAugment on the whole truncated uint8 batch,
    with the generator's next draw as the seed of torchvision's RNG."""
    from torchvision import transforms

    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    draw = int(torch.randint(0, 2**62, (1,), generator=_gen(seed)).item())
    pixels = ((x * s + m) * 255).clamp(0, 255).to(torch.uint8)  # .to(uint8) truncates
    policy = transforms.AutoAugmentPolicy.CIFAR10 if x.shape[-1] <= 32 else transforms.AutoAugmentPolicy.IMAGENET
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(draw)
        out = transforms.AutoAugment(policy)(pixels)
    return (out.float() / 255 - m) / s


def _fractional_batch(n, channels, side, seed=0):
    """Normalised images whose pixels sit at k + 0.7 (/255): truncation and rounding differ on every pixel."""
    mean, std = MEAN3[:channels], STD3[:channels]
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    k = torch.randint(0, 255, (n, channels, side, side), generator=_gen(seed)).float()
    return ((k + 0.7) / 255 - m) / s, mean, std


@pytest.mark.parametrize("channels,side", [(3, 32), (1, 8), (3, 64)])
def test_autoaugment_per_batch_is_torchvision_v1_on_the_whole_batch(channels, side):
    x, mean, std = _fractional_batch(6, channels, side)
    for seed in range(4):
        view = _view("autoaugment", x, seed=seed, mean=mean, std=std)  # per batch by default
        expected = _reference_autoaugment_batch(x, seed, mean, std)
        assert torch.equal(view.x, expected), seed
        assert torch.equal(_view("autoaugment", x, seed=seed, mean=mean, std=std, autoaugment_per="batch").x, view.x)


def test_autoaugment_per_batch_gives_every_image_the_same_sub_policy():
    one = _fractional_batch(1, 3, 32, seed=3)[0]
    x = one.expand(8, -1, -1, -1).contiguous()  # 8 copies of one image
    changed = 0
    for seed in range(6):
        view = _view("autoaugment", x, seed=seed)
        assert all(torch.equal(v, view.x[0]) for v in view.x), seed  # same ops, magnitudes, draws
        per_image = _view("autoaugment", x, seed=seed, autoaugment_per="image")
        changed += len({tuple(v.flatten().tolist()) for v in per_image.x}) > 1
    assert changed > 0  # per image, copies of one image do come out differently


def test_autoaugment_per_batch_truncates_per_image_rounds():
    x, mean, std = _fractional_batch(4, 3, 8)
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    k = torch.randint(0, 255, (4, 3, 8, 8), generator=_gen(0))
    assert torch.equal(to_pixels(x, m, s, "truncate"), k.to(torch.uint8))
    assert torch.equal(to_pixels(x, m, s, "round"), (k + 1).to(torch.uint8))
    # 1.0 - 1e-7 in [0, 1] units is just under 255: truncation gives 254 (the reference), rounding 255
    edge = ((torch.full((1, 3, 2, 2), 1.0 - 1e-6) - m) / s)
    assert int(to_pixels(edge, m, s, "truncate").max()) == 254
    assert int(to_pixels(edge, m, s, "round").min()) == 255
    # a view through the rounding route differs from the reference's truncating one
    rounded = ((k + 1).float() / 255 - m) / s
    for seed in range(3):
        assert not torch.equal(_view("autoaugment", x, seed=seed, mean=mean, std=std).x,
                               _reference_autoaugment_batch(rounded, seed, mean, std))


def test_autoaugment_per_image_is_unchanged():
    # the per-image view bit for bit as before per-batch became the default (git 8006a51)
    x = torch.randn(6, 3, 32, 32, generator=_gen(3))
    view = make_view("autoaugment", x, generator=_gen(4), mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3),
                     autoaugment_per="image")
    assert sha256_state_dict({"x": view.x}) == "9fa79c20f73673bc70ebad09f1012681094817b2eda523d60769aa41c1cb99e9"


def test_autoaugment_per_is_a_method_param():
    from r2kd.config import METHOD_PARAMS

    for name, model in METHOD_PARAMS.items():
        assert model().autoaugment_per == "batch", name
        assert model(autoaugment_per="image").autoaugment_per == "image"
    with pytest.raises(ValueError, match="autoaugment_per"):
        _view("autoaugment", torch.zeros(2, 3, 4, 4), autoaugment_per="pixel")
