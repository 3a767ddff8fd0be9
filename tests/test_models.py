"""The model zoo: names, sizes, checkpoint compatibility, input variants, MAC counting."""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from r2kd import models
from r2kd.errors import ConfigError
from r2kd.files import load_checkpoint, save_checkpoint
from r2kd.models import available, classifier_of, count_macs, count_parameters, create

torch.set_num_threads(1)

ZOO = [
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
    "vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "MobileNetV2", "ShuffleV1", "ShuffleV2",
]  # fmt: skip

DOC = Path(__file__).resolve().parents[1] / "docs" / "models.md"


@functools.cache
def _built(name: str, num_classes: int = 100, in_channels: int = 3, input_size: int = 32):
    """One shared instance per configuration, for tests that only read names and shapes."""
    return create(name, num_classes, in_channels=in_channels, input_size=input_size)


def _doc_table() -> dict[str, list[int]]:
    """name -> [params, MACs 3x32x32, MACs 3x64x64, MACs 1x8x8] from docs/models.md."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        is_row = len(cells) >= 5 and re.fullmatch(r"`[^`]+`", cells[0])
        if is_row and re.fullmatch(r"[\d,]+", cells[1]):
            rows[cells[0].strip("`")] = [int(c.replace(",", "")) for c in cells[1:5]]
    return rows


def test_available_is_the_sorted_zoo():
    imagenet = ["tv_resnet18", "tv_resnet34", "tv_resnet50", "tv_mobilenet_v2", "mobilenet_v1"]  # tests/test_imagenet_models.py
    assert available() == sorted(ZOO + imagenet)


def test_param_counts_match_the_docs_table():
    table = _doc_table()
    assert sorted(table) == sorted(ZOO)
    for name, row in table.items():
        assert count_parameters(_built(name)) == row[0], name


def test_macs_at_32px_match_the_docs_table():
    for name, row in _doc_table().items():
        assert count_macs(_built(name), (3, 32, 32)) == row[1], name


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV2"])
def test_macs_of_the_64px_and_8px_variants_match_the_docs_table(name):
    # Catches a changed stride or pooling plan, which leaves every parameter shape intact.
    row = _doc_table()[name]
    assert count_macs(_built(name, 200, 3, 64), (3, 64, 64)) == row[2]
    assert count_macs(_built(name, 10, 1, 8), (1, 8, 8)) == row[3]


# Sizes published for the zoo (RepDistiller/CRD and mdistiller tables), in millions, 2 decimals.
PUBLISHED_M = {
    "resnet8x4": 1.23, "resnet32x4": 7.43, "wrn_16_2": 0.70, "wrn_40_1": 0.57, "wrn_40_2": 2.26,
    "resnet20": 0.28, "resnet32": 0.47, "resnet56": 0.86, "resnet110": 1.74,
    "vgg8": 3.96, "vgg13": 9.46, "MobileNetV2": 0.81, "ShuffleV1": 0.95, "ShuffleV2": 1.36,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PUBLISHED_M))
def test_param_counts_match_published_sizes(name):
    millions = count_parameters(_built(name)) / 1e6
    # Papers round or truncate to two decimals (vgg8 3,965,028 is quoted as 3.96 M).
    assert PUBLISHED_M[name] in (round(millions, 2), math.floor(millions * 100) / 100)


def _bn(c: int) -> int:
    return 2 * c


def test_resnet8_params_and_macs_by_hand():
    # resnet8 = stem conv + one basic block per stage (16, 32, 64), 1x1 projections where the
    # width or stride changes, fc 64 -> 100. Worked out on paper at 32 px.
    params = (
        3 * 16 * 9 + _bn(16)  # stem
        + 2 * (16 * 16 * 9 + _bn(16))  # stage 1, no projection
        + 16 * 32 * 9 + _bn(32) + 32 * 32 * 9 + _bn(32) + 16 * 32 + _bn(32)  # stage 2
        + 32 * 64 * 9 + _bn(64) + 64 * 64 * 9 + _bn(64) + 32 * 64 + _bn(64)  # stage 3
        + 64 * 100 + 100  # fc
    )  # fmt: skip
    macs = (
        32 * 32 * 16 * 3 * 9
        + 2 * 32 * 32 * 16 * 16 * 9
        + 16 * 16 * 32 * (16 * 9 + 32 * 9 + 16)
        + 8 * 8 * 64 * (32 * 9 + 64 * 9 + 32)
        + 64 * 100
    )
    model = create("resnet8", 100)
    assert count_parameters(model) == params == 83_892
    assert count_macs(model, (3, 32, 32)) == macs


def test_published_mac_count_of_resnet32x4():
    assert round(count_macs(create("resnet32x4", 100), (3, 32, 32)) / 1e9, 2) == 1.08


def test_count_macs_counts_grouped_convs_and_linears_and_restores_mode():
    net = nn.Sequential(
        nn.Conv2d(4, 6, 3, padding=1, groups=2),  # 5x5x6 outputs, fan-in 2*3*3
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 7),
    )
    net.train()
    expected = 5 * 5 * 6 * (2 * 9) + 6 * 7
    assert count_macs(net, (4, 5, 5)) == expected
    assert count_macs(net, (1, 4, 5, 5)) == expected
    assert net.training
    assert not any(m._forward_hooks for m in net.modules())
    with pytest.raises(ValueError):
        count_macs(net, (2, 4, 5, 5))


# Keys and shapes of the original RepDistiller/mdistiller definitions, written out from
# models/resnet.py (ResNet(8, [32, 64, 128, 256], 'basicblock')) and models/wrn.py
# (WideResNet(depth=16, widen_factor=2)) at 100 classes.
def _bn_keys(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    stats = ("weight", "bias", "running_mean", "running_var")
    keys: dict[str, tuple[int, ...]] = {f"{prefix}.{k}": (c,) for k in stats}
    keys[f"{prefix}.num_batches_tracked"] = ()
    return keys


def _resnet8x4_reference() -> dict[str, tuple[int, ...]]:
    ref = {"conv1.weight": (32, 3, 3, 3), **_bn_keys("bn1", 32)}
    for stage, (cin, cout) in enumerate([(32, 64), (64, 128), (128, 256)], start=1):
        p = f"layer{stage}.0"
        ref[f"{p}.conv1.weight"] = (cout, cin, 3, 3)
        ref.update(_bn_keys(f"{p}.bn1", cout))
        ref[f"{p}.conv2.weight"] = (cout, cout, 3, 3)
        ref.update(_bn_keys(f"{p}.bn2", cout))
        ref[f"{p}.downsample.0.weight"] = (cout, cin, 1, 1)
        ref.update(_bn_keys(f"{p}.downsample.1", cout))
    ref["fc.weight"] = (100, 256)
    ref["fc.bias"] = (100,)
    return ref


def _wrn_16_2_reference() -> dict[str, tuple[int, ...]]:
    ref: dict[str, tuple[int, ...]] = {"conv1.weight": (16, 3, 3, 3)}
    for block, (cin, cout) in enumerate([(16, 32), (32, 64), (64, 128)], start=1):
        for i in range(2):
            p = f"block{block}.layer.{i}"
            c_in = cin if i == 0 else cout
            ref.update(_bn_keys(f"{p}.bn1", c_in))
            ref[f"{p}.conv1.weight"] = (cout, c_in, 3, 3)
            ref.update(_bn_keys(f"{p}.bn2", cout))
            ref[f"{p}.conv2.weight"] = (cout, cout, 3, 3)
            if i == 0:
                ref[f"{p}.convShortcut.weight"] = (cout, cin, 1, 1)
    ref.update(_bn_keys("bn1", 128))
    ref["fc.weight"] = (100, 128)
    ref["fc.bias"] = (100,)
    return ref


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("name", "reference"), [("resnet8x4", _resnet8x4_reference), ("wrn_16_2", _wrn_16_2_reference)]
)
def test_state_dict_matches_original_keys_exactly(name, reference):
    assert _shapes(_built(name)) == reference()


# Spot checks in the families with less regular names (from models/vgg.py, mobilenetv2.py,
# ShuffleNetv1.py, ShuffleNetv2.py).
SPOT_KEYS = {
    "vgg8": {
        "block0.0.weight": (64, 3, 3, 3), "block0.0.bias": (64,), "block0.1.running_var": (64,),
        "block4.0.weight": (512, 512, 3, 3), "block4.1.weight": (512,),
        "classifier.weight": (100, 512),
    },
    "vgg13": {"block0.3.weight": (64, 64, 3, 3), "block0.4.bias": (64,), "block4.4.weight": (512,)},
    "MobileNetV2": {
        "conv1.0.weight": (16, 3, 3, 3), "conv1.1.weight": (16,),
        "blocks.0.0.conv.0.weight": (16, 16, 1, 1), "blocks.0.0.conv.6.weight": (8, 16, 1, 1),
        "blocks.1.0.conv.3.weight": (48, 1, 3, 3), "blocks.6.0.conv.7.running_mean": (160,),
        "conv2.0.weight": (1280, 160, 1, 1), "classifier.0.weight": (100, 1280),
    },
    "ShuffleV1": {
        "conv1.weight": (24, 3, 1, 1), "layer1.0.conv1.weight": (54, 24, 1, 1),
        "layer1.0.conv3.weight": (216, 18, 1, 1), "layer1.1.conv1.weight": (60, 80, 1, 1),
        "layer3.3.bn3.weight": (960,), "linear.weight": (100, 960),
    },
    "ShuffleV2": {
        "conv1.weight": (24, 3, 1, 1), "layer1.0.conv1.weight": (24, 1, 3, 3),
        "layer1.0.conv5.weight": (58, 58, 1, 1), "layer1.1.conv2.weight": (58, 1, 3, 3),
        "layer2.7.bn3.weight": (116,), "conv2.weight": (1024, 464, 1, 1),
        "linear.weight": (100, 1024),
    },
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SPOT_KEYS))
def test_state_dict_spot_keys(name):
    shapes = _shapes(_built(name))
    for key, shape in SPOT_KEYS[name].items():
        assert shapes.get(key) == shape, key


# 64 px costs 4x the CPU time of 32 px; one network per family covers every 64 px code path.
SMALLEST_OF_FAMILY = {"resnet8", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2"}


@pytest.mark.parametrize("name", ZOO)
def test_forward_backward_at_all_input_variants(name):
    shapes = [(1, 8), (3, 32)] + ([(3, 64)] if name in SMALLEST_OF_FAMILY else [])
    for channels, size in shapes:
        torch.manual_seed(0)
        model = create(name, 10, in_channels=channels, input_size=size)
        logits = model(torch.randn(2, channels, size, size))
        assert logits.shape == (2, 10)
        assert torch.isfinite(logits).all()
        logits.square().mean().backward()
        assert all(p.grad is not None for p in model.parameters()), (name, size)


@pytest.mark.parametrize("name", ZOO)
def test_variants_change_only_stem_and_classifier(name):
    base = _shapes(_built(name))
    grey = _shapes(_built(name, 10, 1, 8))
    tiny = _shapes(_built(name, 200, 3, 64))
    assert list(base) == list(grey) == list(tiny)
    classifier = {f"{_built(name).classifier_path}.weight", f"{_built(name).classifier_path}.bias"}
    stem = next(k for k in base if len(base[k]) == 4)  # the first convolution's weight
    assert grey[stem][1] == 1
    assert {k for k in base if base[k] != grey[k]} == {stem} | classifier
    assert {k for k in base if base[k] != tiny[k]} == classifier


def test_vgg_pooling_follows_the_reference_and_skips_pools_for_tiny_inputs():
    def real_pools(size: int) -> list[bool]:
        model = create("vgg8", 10, input_size=size)
        return [isinstance(getattr(model, f"pool{k}"), nn.MaxPool2d) for k in range(4)]

    assert real_pools(32) == [True, True, True, False]  # original: pool3 only when h == 64
    assert real_pools(64) == [True, True, True, True]
    assert real_pools(8) == [True, True, True, False]  # 8 -> 4 -> 2 -> 1
    assert real_pools(4) == [True, True, False, False]  # a third pool would leave 0x0
    model = create("vgg8", 10, input_size=4)
    assert model(torch.randn(2, 3, 4, 4)).shape == (2, 10)


def test_mobilenetv2_stem_stride_reduced_only_below_16px():
    assert create("MobileNetV2", 10, input_size=32).conv1[0].stride == (2, 2)
    assert create("MobileNetV2", 10, input_size=16).conv1[0].stride == (2, 2)
    assert create("MobileNetV2", 10, in_channels=1, input_size=8).conv1[0].stride == (1, 1)


def test_unknown_name_error_lists_known_names():
    with pytest.raises(ConfigError) as info:
        create("resnet9000", 10)
    message = str(info.value)
    assert "resnet9000" in message
    for name in ZOO:
        assert name in message


@pytest.mark.parametrize(
    "kwargs",
    [{"num_classes": 0}, {"num_classes": 10, "in_channels": 0}, {"num_classes": 10, "input_size": -1}],
)
def test_bad_sizes_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        create("resnet8", **kwargs)


@pytest.mark.parametrize("name", ZOO)
def test_classifier_of_returns_the_logit_layer(name):
    model = _built(name)
    fc = classifier_of(model)
    assert isinstance(fc, nn.Linear) and fc.out_features == 100
    outputs = []
    handle = fc.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 32, 32))
    handle.remove()
    assert torch.equal(outputs[0], logits)


def test_classifier_of_generic_modules():
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    assert classifier_of(net) is net[2]
    with pytest.raises(TypeError):
        classifier_of(nn.Sequential(nn.Conv2d(1, 1, 1)))


@pytest.mark.parametrize("name", ["wrn_16_2", "resnet8x4", "MobileNetV2"])
def test_published_checkpoint_format_round_trip_loads_strict(tmp_path, name):
    torch.manual_seed(1)
    source = create(name, 100)
    # Non-trivial BN statistics so the comparison below depends on the buffers too.
    for module in source.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "ckpt_epoch_240.pth"
    save_checkpoint(path, {"model": source.state_dict()})
    target = create(name, 100)
    target.load_state_dict(load_checkpoint(path)["model"], strict=True)
    source.eval()
    target.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))
    with pytest.raises(RuntimeError):
        create("wrn_40_2", 100).load_state_dict(load_checkpoint(path)["model"], strict=True)


@pytest.mark.parametrize("name", ["wrn_16_2", "vgg8"])
def test_structurally_pruned_model_still_runs(name):
    tp = pytest.importorskip("torch_pruning")
    model = create(name, 10, in_channels=1, input_size=8)
    example = torch.randn(1, 1, 8, 8)
    before = count_parameters(model)
    pruner = tp.pruner.BasePruner(
        model,
        example,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.25,
        ignored_layers=[classifier_of(model)],
    )
    pruner.step()
    model.train()
    logits = model(torch.randn(2, 1, 8, 8))
    assert logits.shape == (2, 10)
    assert classifier_of(model).out_features == 10
    assert count_parameters(model) < 0.7 * before


def test_public_api_names():
    expected = {"available", "classifier_of", "count_macs", "count_parameters", "create"}
    assert set(models.__all__) == expected


# Forward semantics of the blocks whose wiring is easy to get subtly wrong, written out as in the
# original code with functional ops (a wrong wiring still loads a checkpoint but computes
# something else).
def _bn_eval(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.batch_norm(
        x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps
    )


def _randomise(module: nn.Module) -> nn.Module:
    torch.manual_seed(3)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return module.eval()


def test_channel_shuffle_permutation_by_hand():
    from r2kd.models.layers import ChannelShuffle

    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert ChannelShuffle(2)(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert ChannelShuffle(3)(x).flatten().tolist() == [0, 2, 4, 1, 3, 5]


@pytest.mark.parametrize(("cin", "cout", "stride"), [(4, 4, 1), (4, 6, 2)])
def test_wrn_block_matches_reference_wiring(cin, cout, stride):
    from r2kd.models.wrn import BasicBlock

    relu = torch.relu
    block = _randomise(BasicBlock(cin, cout, stride))
    x = torch.randn(2, cin, 6, 6)
    act = relu(_bn_eval(block.bn1, x))
    out = block.conv2(relu(_bn_eval(block.bn2, block.conv1(act))))
    # equal widths: identity on the raw input; otherwise 1x1 projection of the activated input
    expected = out + (x if cin == cout else block.convShortcut(act))
    with torch.no_grad():
        assert torch.allclose(block(x), expected, atol=1e-6)


def test_resnet_block_adds_before_the_final_relu():
    from r2kd.models.resnet import BasicBlock

    block = _randomise(BasicBlock(4, 6, 2))
    x = torch.randn(2, 4, 6, 6)
    out = _bn_eval(block.bn2, block.conv2(torch.relu(_bn_eval(block.bn1, block.conv1(x)))))
    shortcut = _bn_eval(block.downsample[1], block.downsample[0](x))
    with torch.no_grad():
        assert torch.allclose(block(x), torch.relu(out + shortcut), atol=1e-6)


def test_shufflenet_v1_stride2_block_concatenates_branch_then_pooled_input():
    from r2kd.models.layers import ChannelShuffle
    from r2kd.models.shufflenetv1 import Bottleneck

    block = _randomise(Bottleneck(24, 216, stride=2, groups=3, first_groups=1))
    x = torch.randn(2, 24, 6, 6)
    out = torch.relu(_bn_eval(block.bn1, block.conv1(x)))
    out = ChannelShuffle(1)(out)
    out = torch.relu(_bn_eval(block.bn2, block.conv2(out)))
    out = _bn_eval(block.bn3, block.conv3(out))
    res = torch.nn.functional.avg_pool2d(x, 3, stride=2, padding=1)
    with torch.no_grad():
        assert torch.allclose(block(x), torch.relu(torch.cat([out, res], 1)), atol=1e-6)


def test_shufflenet_v2_block_passes_the_first_half_through():
    from r2kd.models.shufflenetv2 import BasicBlock

    block = _randomise(BasicBlock(8))
    x = torch.randn(2, 8, 5, 5)
    x1, x2 = x[:, :4], x[:, 4:]
    out = torch.relu(_bn_eval(block.bn1, block.conv1(x2)))
    out = _bn_eval(block.bn2, block.conv2(out))
    out = torch.relu(_bn_eval(block.bn3, block.conv3(out)))
    cat = torch.cat([x1, out], 1)
    expected = cat[:, [0, 4, 1, 5, 2, 6, 3, 7]]  # shuffle with 2 groups
    with torch.no_grad():
        assert torch.allclose(block(x), expected, atol=1e-6)
