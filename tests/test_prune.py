"""Pruning the teacher: both methods, weights-only save/load with the pruned structure, BatchNorm mode (METHOD.md §5)."""

from __future__ import annotations

import copy
from typing import get_args

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from r2kd.errors import CheckpointError, ConfigError
from r2kd.files import save_checkpoint
from r2kd.config import PruneConfig, PruneMethod
from r2kd.modelfile import load_model, read_model_file, save_model
from r2kd.pruning import prune_teacher, set_bn_mode
from r2kd.pruning.methods import PRUNE_METHODS

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------
# Small test models


class TinyResNet(nn.Module):
    """CIFAR-style: stem, one identity residual block, one downsampling block, pooled Linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        w, w2 = width, 2 * width
        self.stem = nn.Conv2d(in_channels, w, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(w)
        self.b1_conv1 = nn.Conv2d(w, w, 3, padding=1, bias=False)
        self.b1_bn1 = nn.BatchNorm2d(w)
        self.b1_conv2 = nn.Conv2d(w, w, 3, padding=1, bias=False)
        self.b1_bn2 = nn.BatchNorm2d(w)
        self.b2_conv1 = nn.Conv2d(w, w2, 3, stride=2, padding=1, bias=False)
        self.b2_bn1 = nn.BatchNorm2d(w2)
        self.b2_conv2 = nn.Conv2d(w2, w2, 3, padding=1, bias=False)
        self.b2_bn2 = nn.BatchNorm2d(w2)
        self.b2_short = nn.Conv2d(w, w2, 1, stride=2, bias=False)
        self.b2_short_bn = nn.BatchNorm2d(w2)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(w2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem_bn(self.stem(x)))
        h = torch.relu(self.b1_bn1(self.b1_conv1(x)))
        x = torch.relu(x + self.b1_bn2(self.b1_conv2(h)))
        h = torch.relu(self.b2_bn1(self.b2_conv1(x)))
        x = torch.relu(self.b2_short_bn(self.b2_short(x)) + self.b2_bn2(self.b2_conv2(h)))
        return self.fc(self.drop(x.mean((2, 3))))


class ShuffleNet(nn.Module):
    """A channel shuffle: torch-pruning's dependency graph does not follow the permutation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        n, c, h, w = x.shape
        x = x.view(n, 4, c // 4, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.fc(self.conv2(x).mean((2, 3)))


class FlipNet(nn.Module):
    """Reverses the channel order: shapes survive pruning, but the dependency graph misses it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x))).flip(1)
        return self.fc(self.conv2(x).mean((2, 3)))


class StoredWidthNet(nn.Module):
    """Reshapes to a stored channel count (like the original WRN's ``nChannels``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)
        self.width = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(x.mean((2, 3)).reshape(-1, self.width))


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Distinct, non-trivial BN parameters and statistics (fresh ones are all 1 / 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    return model


def _tiny(width: int = 16, seed: int = 0) -> TinyResNet:
    torch.manual_seed(seed)
    return _randomise_bn(TinyResNet(width=width), seed).eval()


def _build_tiny(arch: dict) -> nn.Module:
    return TinyResNet(**arch)


TINY_ARCH = {"num_classes": 10, "in_channels": 3, "width": 16}


def _snapshot(model: nn.Module) -> tuple:
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        {n: m.training for n, m in model.named_modules()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()),
    )


def _assert_same(before: tuple, after: tuple) -> None:
    state_b, modes_b, grads_b, hooks_b = before
    state_a, modes_a, grads_a, hooks_a = after
    assert state_a.keys() == state_b.keys()
    for k in state_b:
        assert torch.equal(state_a[k], state_b[k]), k
    assert (modes_a, grads_a, hooks_a) == (modes_b, grads_b, hooks_b)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Config and registry


def test_config_defaults() -> None:
    cfg = PruneConfig()
    assert (cfg.method, cfg.ratio, cfg.bn_mode, cfg.importance_p) == ("l1_unstructured", 0.1, "train", 2)  # the reference
    assert set(PRUNE_METHODS) == {"torch_pruning", "l1_unstructured"} == set(get_args(PruneMethod))
    for name in PRUNE_METHODS:
        assert prune_teacher(_tiny(), torch.randn(2, 3, 8, 8), PruneConfig(method=name)).stats.method == name


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"ratio": 0.0}, "ratio"),
        ({"ratio": 1.0}, "ratio"),
        ({"method": "random"}, "method"),
        ({"bn_mode": "frozen"}, "bn_mode"),
        ({"importance_p": 3}, "importance_p"),
        ({"amount": 0.1}, "amount"),
    ],
)
def test_config_rejects_bad_values_naming_the_key(bad: dict, key: str) -> None:
    with pytest.raises(ValidationError, match=key):
        PruneConfig(**bad)


# --------------------------------------------------------------------------------------------
# torch_pruning (structured)


def test_torch_pruning_half_width_is_exactly_the_half_width_network() -> None:
    model = _tiny()
    x = torch.randn(2, 3, 8, 8)
    result = prune_teacher(model, x, PruneConfig(method="torch_pruning", ratio=0.5))
    # Independent reference: the same architecture built at half the width, classifier outputs kept.
    half = TinyResNet(width=8)
    got = {k: tuple(v.shape) for k, v in result.model.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in half.state_dict().items()}
    assert got == want
    assert result.model.fc.out_features == 10
    assert result.stats.params_before == _params(model)
    assert result.stats.params_after == _params(half)
    # MACs by hand (conv: out elements x fan-in; linear: in x out), one 8x8 sample.
    def macs(w: int) -> int:
        full, half_res = 8 * 8, 4 * 4
        return (
            full * w * 3 * 9  # stem
            + 2 * full * w * w * 9  # block 1
            + half_res * 2 * w * w * 9  # b2_conv1
            + half_res * 2 * w * 2 * w * 9  # b2_conv2
            + half_res * 2 * w * w  # shortcut
            + 2 * w * 10  # fc
        )

    assert result.stats.macs_before == macs(16)
    assert result.stats.macs_after == macs(8)
    assert result.model(x).shape == (2, 10)


def test_torch_pruning_keeps_whole_channels_consistently() -> None:
    """The pruned weights are the original ones at the kept channels, coupled across the residual.

    Kept channel indices are read off the (distinct) BN weights, then every conv weight must be the
    original indexed by [kept outputs][:, kept inputs] and the classifier by [:, kept inputs].
    """
    model = _tiny()
    pruned = prune_teacher(model, torch.randn(2, 3, 8, 8), PruneConfig(method="torch_pruning", ratio=0.25)).model
    orig = dict(model.named_modules())
    new = dict(pruned.named_modules())

    def kept(bn: str) -> torch.Tensor:
        o, n = orig[bn].weight.detach(), new[bn].weight.detach()
        idx = torch.tensor([int((o == v).nonzero()) for v in n])
        for attr in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(getattr(new[bn], attr), getattr(orig[bn], attr)[idx]), (bn, attr)
        return idx

    k = {bn: kept(bn) for bn in new if bn.endswith("bn") or "_bn" in bn}
    assert len(k["stem_bn"]) == 12 and len(k["b2_bn1"]) == 24
    # Residual additions couple channels: both sides must keep the same ones.
    assert torch.equal(k["stem_bn"], k["b1_bn2"])
    assert torch.equal(k["b2_short_bn"], k["b2_bn2"])
    convs = {  # conv: (its BN, the BN whose output it reads)
        "stem": ("stem_bn", None),
        "b1_conv1": ("b1_bn1", "stem_bn"),
        "b1_conv2": ("b1_bn2", "b1_bn1"),
        "b2_conv1": ("b2_bn1", "b1_bn2"),
        "b2_conv2": ("b2_bn2", "b2_bn1"),
        "b2_short": ("b2_short_bn", "b1_bn2"),
    }
    for conv, (out_bn, in_bn) in convs.items():
        w = orig[conv].weight.detach()[k[out_bn]]
        if in_bn is not None:
            w = w[:, k[in_bn]]
        assert torch.equal(new[conv].weight, w), conv
    assert torch.equal(new["fc"].weight, orig["fc"].weight[:, k["b2_bn2"]])
    assert torch.equal(new["fc"].bias, orig["fc"].bias)


def test_torch_pruning_leaves_input_alone_and_prunes_frozen_teachers() -> None:
    # A trained teacher is usually frozen and in eval mode: with no autograd graph torch-pruning
    # would silently prune nothing, so this must still shrink.
    model = _tiny()
    for p in model.parameters():
        p.requires_grad_(False)
    model.stem_bn.train()  # mixed modes must survive too
    before = _snapshot(model)
    result = prune_teacher(model, torch.randn(2, 3, 8, 8), PruneConfig(method="torch_pruning", ratio=0.5))
    _assert_same(before, _snapshot(model))
    assert result.stats.params_after < result.stats.params_before
    assert not any(p.requires_grad for p in result.model.parameters())
    assert {n: m.training for n, m in result.model.named_modules()} == before[1]


@pytest.mark.parametrize(
    "net, reason",
    [
        (ShuffleNet, "permutes tensor dimensions"),  # refused before torch-pruning runs
        (FlipNet, "missed a channel coupling"),  # caught by the masked-original comparison
        (StoredWidthNet, "no longer runs"),
    ],
)
def test_torch_pruning_refuses_networks_it_would_get_wrong(net: type, reason: str) -> None:
    torch.manual_seed(0)
    model = _randomise_bn(net()).eval()
    before = _snapshot(model)
    with pytest.raises(ConfigError, match=f"{net.__name__}: .*{reason}.*l1_unstructured"):
        prune_teacher(model, torch.randn(2, 3, 8, 8), PruneConfig(method="torch_pruning", ratio=0.5))
    _assert_same(before, _snapshot(model))


@pytest.mark.parametrize("p", [1, 2])
def test_importance_norm_is_used(p: int) -> None:
    result = prune_teacher(_tiny(), torch.randn(2, 3, 8, 8), PruneConfig(method="torch_pruning", ratio=0.5, importance_p=p))
    assert result.model.stem.out_channels == 8


# --------------------------------------------------------------------------------------------
# l1_unstructured (the reference)


@pytest.mark.parametrize("ratio", [0.1, 0.3])
def test_l1_unstructured_zeros_the_smallest_weights_of_every_layer(ratio: float) -> None:
    model = _tiny()
    model.b1_short_probe = nn.Linear(5, 9)  # 45 weights: 0.1 x 45 = 4.5 exercises the rounding
    before = _snapshot(model)
    result = prune_teacher(model, torch.randn(2, 3, 8, 8), PruneConfig(method="l1_unstructured", ratio=ratio))
    _assert_same(before, _snapshot(model))
    pruned = result.model
    orig = dict(model.named_modules())
    layers = [(n, m) for n, m in pruned.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert {n for n, _ in layers} == {
        "stem", "b1_conv1", "b1_conv2", "b2_conv1", "b2_conv2", "b2_short", "fc", "b1_short_probe"
    }
    zeroed_total = total = 0
    for name, layer in layers:
        w0 = orig[name].weight.detach().double().flatten()
        n = w0.numel()
        k = round(ratio * n)  # torch's rule (Python round: half to even)
        smallest = set(torch.argsort(w0.abs())[:k].tolist())
        w = layer.weight.detach().double().flatten()
        assert set((w == 0).nonzero().flatten().tolist()) == smallest, name
        keep = torch.tensor(sorted(set(range(n)) - smallest))
        assert torch.equal(w[keep], w0[keep]), name
        zeroed_total += k
        total += n
    # Biases, BatchNorm parameters and statistics are untouched.
    state0 = before[0]
    for key, value in pruned.state_dict().items():
        if not key.endswith("weight") or "bn" in key:
            assert torch.equal(value, state0[key]), key
    # Permanent: no pruning re-parametrisation left behind.
    assert not any(m._forward_pre_hooks for m in pruned.modules())
    names = [n for n, _ in pruned.named_parameters()] + [n for n, _ in pruned.named_buffers()]
    assert not any(n.endswith(("_orig", "_mask")) for n in names)
    stats = result.stats
    assert stats.params_after == stats.params_before and stats.macs_after == stats.macs_before
    assert stats.nonzero_weight_fraction_before == 1.0
    assert stats.nonzero_weight_fraction_after == pytest.approx(1 - zeroed_total / total)


# --------------------------------------------------------------------------------------------
# Weights-only save / load


@pytest.mark.parametrize("method", ["torch_pruning", "l1_unstructured"])
def test_save_load_round_trip(tmp_path, method: str) -> None:
    x = torch.randn(3, 3, 8, 8)
    result = prune_teacher(_tiny(), x, PruneConfig(method=method, ratio=0.3))
    path = tmp_path / "pruned.pt"
    save_model(path, result.model, TINY_ARCH, structure=result.structure, stats=result.stats.as_dict())
    torch.load(path, weights_only=True)  # the file itself is weights-only
    loaded, meta = load_model(path, build=_build_tiny), read_model_file(path)
    assert meta["arch"] == TINY_ARCH and meta["structure"] == result.structure
    assert meta["stats"] == result.stats.as_dict()
    assert not loaded.training
    result.model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))


def test_save_refuses_inconsistent_or_unpicklable_metadata(tmp_path) -> None:
    result = prune_teacher(_tiny(), torch.randn(2, 3, 8, 8), PruneConfig(method="torch_pruning", ratio=0.5))
    with pytest.raises(TypeError, match="arch"):
        save_model(tmp_path / "a.pt", result.model, {"f": object()}, structure=result.structure, stats={})
    with pytest.raises(ValueError, match="structure"):
        save_model(tmp_path / "b.pt", _tiny(), TINY_ARCH, structure=result.structure, stats={})


@pytest.fixture()
def saved(tmp_path):
    result = prune_teacher(_tiny(), torch.randn(2, 3, 8, 8), PruneConfig(method="torch_pruning", ratio=0.5))
    path = tmp_path / "pruned.pt"
    save_model(path, result.model, TINY_ARCH, structure=result.structure, stats={})
    return path


def test_load_refuses_pickled_objects(tmp_path) -> None:
    path = tmp_path / "module.pt"
    torch.save(TinyResNet(), path)  # a whole pickled module
    with pytest.raises(CheckpointError, match="module.pt.*pickled"):
        load_model(path, build=_build_tiny)


def test_load_refuses_truncated_file(saved) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="pruned.pt.*corrupt"):
        load_model(saved, build=_build_tiny)


def test_load_refuses_foreign_checkpoint(tmp_path) -> None:
    path = tmp_path / "teacher.pt"
    save_checkpoint(path, {"model": TinyResNet().state_dict()})
    with pytest.raises(CheckpointError, match="teacher.pt.*not an r2kd model file"):
        load_model(path, build=_build_tiny)


def test_load_refuses_structure_of_another_architecture(saved) -> None:
    with pytest.raises(CheckpointError, match="pruned.pt.*does not fit.*b1_conv1"):
        load_model(saved, build=lambda arch: ShuffleNet())


def test_load_refuses_tampered_structure_and_weights(saved, tmp_path) -> None:
    payload = torch.load(saved, weights_only=True)
    bad = copy.deepcopy(payload)
    bad["structure"]["modules"]["b1_conv1"]["groups"] = 3
    save_checkpoint(tmp_path / "groups.pt", bad)
    with pytest.raises(CheckpointError, match="groups.pt.*divisible"):
        load_model(tmp_path / "groups.pt", build=_build_tiny)
    bad = copy.deepcopy(payload)
    bad["structure"]["modules"]["b1_bn1"]["num_features"] = 7
    save_checkpoint(tmp_path / "weights.pt", bad)
    with pytest.raises(CheckpointError, match="weights.pt.*weights do not fit"):
        load_model(tmp_path / "weights.pt", build=_build_tiny)


# --------------------------------------------------------------------------------------------
# BatchNorm mode of the frozen pruned teacher


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_set_bn_mode(mode: str) -> None:
    model = _tiny().train()
    assert set_bn_mode(model, mode) is model
    for name, m in model.named_modules():
        want = mode == "train" and isinstance(m, nn.BatchNorm2d)
        assert m.training == want, name
    assert not any(p.requires_grad for p in model.parameters())
    # Train mode: batch statistics, running stats move; eval mode: they stay. Dropout is off in both.
    mean0 = model.stem_bn.running_mean.clone()
    x = torch.randn(4, 3, 8, 8) + 3.0
    out1, out2 = model(x), model(x)
    assert torch.equal(model.stem_bn.running_mean, mean0) == (mode == "eval")
    if mode == "eval":
        assert torch.equal(out1, out2)  # deterministic: no dropout
    batch_mean = model.stem(x).mean((0, 2, 3))
    expected = mean0 if mode == "eval" else 0.81 * mean0 + 0.19 * batch_mean  # two updates, m=0.1
    assert torch.allclose(model.stem_bn.running_mean, expected, atol=1e-5)


def test_set_bn_mode_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="bn mode"):
        set_bn_mode(_tiny(), "frozen")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# The model zoo


zoo = pytest.importorskip("r2kd.models")


@pytest.mark.parametrize("name", ["resnet8x4", "wrn_16_2", "vgg8", "resnet20"])
@pytest.mark.parametrize("shape", [(1, 8), (3, 32)], ids=["1x8x8", "3x32x32"])
def test_zoo_structured_pruning_and_round_trip(tmp_path, name: str, shape: tuple[int, int]) -> None:
    channels, size = shape
    arch = {"name": name, "num_classes": 100, "in_channels": channels, "input_size": size}
    torch.manual_seed(0)
    model = _randomise_bn(zoo.create(**arch)).eval()
    x = torch.randn(2, channels, size, size)
    result = prune_teacher(model, x, PruneConfig(method="torch_pruning", ratio=0.1))
    stats = result.stats
    # Every group loses ~10 % of its channels: weights scale with (1 - r)^2 = 0.81.
    assert stats.params_kept == pytest.approx(0.81, abs=0.05)
    assert stats.macs_kept == pytest.approx(0.81, abs=0.05)
    assert stats.params_after == zoo.count_parameters(result.model)
    assert zoo.classifier_of(result.model).out_features == 100
    path = tmp_path / "pruned.pt"
    save_model(path, result.model, arch, structure=result.structure, stats=stats.as_dict())
    loaded = load_model(path)  # default build: r2kd.models.create(**arch)
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model.eval()(x))
    assert loaded(x).shape == (2, 100)


def test_zoo_mobilenetv2_is_supported() -> None:
    torch.manual_seed(0)
    model = zoo.create("MobileNetV2", 10, in_channels=1, input_size=8).eval()
    result = prune_teacher(model, torch.randn(2, 1, 8, 8), PruneConfig(method="torch_pruning", ratio=0.1))
    assert result.stats.params_after < result.stats.params_before
    assert zoo.classifier_of(result.model).out_features == 10


@pytest.mark.parametrize("name", ["ShuffleV1", "ShuffleV2"])
def test_zoo_shufflenets_are_refused_with_advice(name: str) -> None:
    torch.manual_seed(0)
    model = zoo.create(name, 10, in_channels=1, input_size=8).eval()
    with pytest.raises(ConfigError, match="not supported.*l1_unstructured"):
        prune_teacher(model, torch.randn(2, 1, 8, 8), PruneConfig(method="torch_pruning", ratio=0.1))


def test_zoo_load_refuses_wrong_architecture(tmp_path) -> None:
    arch = {"name": "resnet8x4", "num_classes": 10, "in_channels": 1, "input_size": 8}
    result = prune_teacher(zoo.create(**arch), torch.randn(2, 1, 8, 8), PruneConfig(method="torch_pruning", ratio=0.1))
    path = tmp_path / "r8x4.pt"
    save_model(path, result.model, arch, structure=result.structure, stats={})
    payload = torch.load(path, weights_only=True)
    payload["arch"] = {**arch, "name": "resnet8"}
    save_checkpoint(path, payload)
    with pytest.raises(CheckpointError, match="r8x4.pt.*does not fit"):
        load_model(path)
    payload["arch"] = {**arch, "name": "no_such_net"}
    save_checkpoint(path, payload)
    with pytest.raises(CheckpointError, match="r8x4.pt.*cannot build"):
        load_model(path)


def test_zoo_pruned_file_is_checked_against_the_teachers_architecture(tmp_path) -> None:
    arch = {"name": "resnet8x4", "num_classes": 10, "in_channels": 1, "input_size": 8}
    result = prune_teacher(zoo.create(**arch), torch.randn(2, 1, 8, 8), PruneConfig(method="torch_pruning", ratio=0.1))
    path = tmp_path / "pruned.pt"
    save_model(path, result.model, arch, structure=result.structure)
    assert load_model(path, arch).fc.in_features == result.model.fc.in_features
    with pytest.raises(CheckpointError, match="pruned.pt holds .* was expected"):
        load_model(path, {**arch, "name": "resnet8"})
