"""ImageNet networks (torchvision's tv_*, mdistiller's mobilenet_v1) and torchvision's pretrained
teachers (r2kd/pretrained.py): sizes against published numbers, pruning, model files, the offline
weights lookup and its verification, the config rules, and the train_teacher stage. No network."""

from __future__ import annotations

import csv
import functools
import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import REPO, TINY, merge
from r2kd import pretrained
from r2kd.config import PRETRAINED_WEIGHTS, PruneConfig, parse_params
from r2kd.errors import CheckpointError, ConfigError
from r2kd.files import load_checkpoint, read_json
from r2kd.modelfile import load_model, save_model
from r2kd.models import classifier_of, count_macs, count_parameters, create
from r2kd.pruning import prune_teacher
from r2kd.yamlfile import read_yaml

torch.set_num_threads(1)

NEW = ["tv_resnet18", "tv_resnet34", "tv_resnet50", "tv_mobilenet_v2", "mobilenet_v1"]

# MobileNet-V1 as described by Howard et al. 2017, Table 1: (output channels, stride) per block.
MV1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)]


def _mv1_params(num_classes: int) -> int:
    """Conv weights (no bias) + 2 BN parameters per channel + the classifier, counted from the table."""
    total = 3 * 32 * 9 + 2 * 32
    channels = 32
    for out, _ in MV1_BLOCKS:
        total += channels * 9 + 2 * channels + channels * out + 2 * out
        channels = out
    return total + 1024 * num_classes + num_classes


def _mv1_macs(size: int, num_classes: int) -> int:
    side = size // 2
    total = side * side * 32 * 3 * 9
    channels = 32
    for out, stride in MV1_BLOCKS:
        side //= stride
        total += side * side * (channels * 9 + channels * out)
        channels = out
    return total + 1024 * num_classes


# torchvision's documented parameter counts at 1000 classes (its model table / weights meta).
PUBLISHED_PARAMS = {
    "tv_resnet18": 11_689_512,
    "tv_resnet34": 21_797_672,
    "tv_resnet50": 25_557_032,
    "tv_mobilenet_v2": 3_504_872,
    "mobilenet_v1": _mv1_params(1000),
}
# torchvision's documented GFLOPS (multiply-accumulates, 224 px), 3 decimals; MobileNet-V1: from the table.
PUBLISHED_GMACS = {"tv_resnet18": 1.814, "tv_resnet34": 3.664, "tv_resnet50": 4.089, "tv_mobilenet_v2": 0.301,
                   "mobilenet_v1": _mv1_macs(224, 1000) / 1e9}


@functools.cache
def _built(name: str, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    return create(name, num_classes, in_channels=in_channels, input_size=224)


# --- the zoo --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NEW)
def test_forward_gives_one_logit_per_class(name: str) -> None:
    model = create(name, 7, input_size=64).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    grey = create(name, 5, in_channels=1, input_size=32)
    out = grey(torch.randn(2, 1, 32, 32))
    out.sum().backward()  # train mode, backward through the replaced stem
    assert out.shape == (2, 5)
    assert classifier_of(grey).out_features == 5


@pytest.mark.parametrize("name", NEW)
def test_sizes_equal_the_published_ones(name: str) -> None:
    model = _built(name)
    assert count_parameters(model) == PUBLISHED_PARAMS[name]
    assert round(count_macs(model, (3, 224, 224)) / 1e9, 3) == round(PUBLISHED_GMACS[name], 3)


def test_docs_table_equals_the_code() -> None:
    text = (REPO / "docs/models.md").read_text().split("## ImageNet networks", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[1][:1].isdigit():
            rows[cells[0].strip("`")] = (int(cells[1].replace(",", "")), int(cells[2].replace(",", "")), cells[3].strip("`"))
    assert sorted(rows) == sorted(NEW)
    for name, (params, macs, classifier) in rows.items():
        model = _built(name)
        assert (count_parameters(model), count_macs(model, (3, 224, 224)), model.classifier_path) == (params, macs, classifier)
        assert params == PUBLISHED_PARAMS[name]


def test_mobilenet_v1_is_about_4_2_million_parameters_and_569_million_macs() -> None:
    # the paper's own figures (Howard et al. 2017, Table 8): 4.2 M parameters, 569 M mult-adds
    assert round(PUBLISHED_PARAMS["mobilenet_v1"] / 1e6, 1) == 4.2
    assert round(PUBLISHED_GMACS["mobilenet_v1"] * 1000) == 569


def test_mobilenet_v1_parameter_names_are_mdistillers() -> None:
    shapes = {k: tuple(v.shape) for k, v in _built("mobilenet_v1").state_dict().items()}
    assert shapes["model.0.0.weight"] == (32, 3, 3, 3)
    assert shapes["model.1.0.weight"] == (32, 1, 3, 3)  # depthwise
    assert shapes["model.1.3.weight"] == (64, 32, 1, 1)  # pointwise
    assert shapes["model.13.4.running_var"] == (1024,)
    assert shapes["fc.weight"] == (1000, 1024)
    # 1 stem + 13 blocks; BN has 5 entries (weight, bias, running mean/var, num_batches_tracked)
    assert len(shapes) == (1 + 5) + 13 * (2 + 2 * 5) + 2
    assert not any(k.startswith("model.14.") for k in shapes)  # the pool holds nothing


def test_grey_input_replaces_only_the_stem() -> None:
    rgb, grey = _built("tv_resnet18", 10), _built("tv_resnet18", 10, in_channels=1)
    a, b = rgb.state_dict(), grey.state_dict()
    assert a.keys() == b.keys()
    assert [k for k in a if a[k].shape != b[k].shape] == ["conv1.weight"]
    assert b["conv1.weight"].shape == (64, 1, 7, 7)


@pytest.mark.parametrize("name", ["tv_resnet18", "tv_resnet50", "tv_mobilenet_v2", "mobilenet_v1"])
def test_both_prune_methods_work_and_the_pruned_file_loads(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = create(name, 10).eval()
    x = torch.randn(2, 3, 32, 32)
    l1 = prune_teacher(teacher, x, PruneConfig(method="l1_unstructured", ratio=0.3))
    assert l1.stats.params_after == l1.stats.params_before
    assert l1.stats.nonzero_weight_fraction_after == pytest.approx(0.7, abs=1e-4)
    structured = prune_teacher(teacher, x, PruneConfig(method="torch_pruning", ratio=0.3))
    assert 0.4 < structured.stats.params_kept < 0.6  # about (1 - 0.3)^2
    arch = {"name": name, "num_classes": 10, "in_channels": 3, "input_size": 32}
    save_model(tmp_path / "pruned.pt", structured.model, arch, structure=structured.structure)
    loaded = load_model(tmp_path / "pruned.pt", arch)
    with torch.no_grad():
        assert torch.equal(loaded(x), structured.model.eval()(x))


# --- pretrained weights: names, location, verification ---------------------------------------------
def test_config_table_equals_torchvisions_weights() -> None:
    from torchvision.models import get_model_weights

    from r2kd.models.torchvision_zoo import TORCHVISION_NAMES, torchvision_name

    assert set(PRETRAINED_WEIGHTS) == set(TORCHVISION_NAMES)
    for arch, members in PRETRAINED_WEIGHTS.items():
        enum = get_model_weights(torchvision_name(arch))
        assert set(members) == set(enum.__members__) - {"DEFAULT"}, arch


def test_resolve_names_torchvisions_file() -> None:
    weights = pretrained.resolve("tv_resnet18", "IMAGENET1K_V1")
    assert weights.url == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert (weights.filename, weights.hash_prefix, weights.num_classes) == ("resnet18-f37072fd.pth", "f37072fd", 1000)
    assert pretrained.resolve("tv_resnet50", "IMAGENET1K_V2").filename == "resnet50-11ad3fa6.pth"
    with pytest.raises(ConfigError, match=r"teachers\.tv_resnet18\.pretrained: .*no member 'IMAGENET1K_V9'"):
        pretrained.resolve("tv_resnet18", "IMAGENET1K_V9")
    with pytest.raises(ConfigError, match=r"teachers\.mobilenet_v1\.pretrained: .*not a torchvision model"):
        pretrained.resolve("mobilenet_v1", "IMAGENET1K_V1")


def test_hash_prefix_follows_torch_hub() -> None:
    assert pretrained.hash_prefix("mobilenet_v2-b0353104.pth") == "b0353104"
    for bad in ("resnet18.pth", "resnet18-f370.pth", "resnet18-F37072FD.pth"):
        with pytest.raises(CheckpointError, match="no SHA-256 prefix"):
            pretrained.hash_prefix(bad)


def test_cache_path_is_where_torch_hub_puts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = pretrained.resolve("tv_resnet34", "IMAGENET1K_V1")
    assert pretrained.cache_path(weights) == tmp_path / "hub" / "checkpoints" / "resnet34-b627a593.pth"


def test_missing_file_is_a_clear_error_and_nothing_is_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = pretrained.resolve("tv_resnet18", "IMAGENET1K_V1")
    with pytest.raises(CheckpointError) as info:
        pretrained.fetch(weights, download=False)
    message = str(info.value)
    path = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(path) in message and weights.url in message and "data.download: true" in message
    assert not (tmp_path / "hub").exists()


def _fake_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: dict, *, wrong_prefix: bool = False):
    """Write ``state`` into the torch.hub cache under a name carrying its own SHA-256 prefix (or a wrong one)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    blob = tmp_path / "blob.pth"
    torch.save(state, blob)
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    prefix = ("0" if digest[0] != "0" else "1") + digest[1:8] if wrong_prefix else digest[:8]
    weights = pretrained.PretrainedWeights(arch="tv_mobilenet_v2", member="IMAGENET1K_V1", enum="MobileNet_V2_Weights",
                                           url=f"https://example.invalid/models/mobilenet_v2-{prefix}.pth",
                                           num_classes=10)
    target = pretrained.cache_path(weights)
    target.parent.mkdir(parents=True)
    blob.rename(target)
    return weights, target, digest


def test_verified_weights_load_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(1)
    state = create("tv_mobilenet_v2", 10).state_dict()
    weights, path, digest = _fake_weights(tmp_path, monkeypatch, state)
    model = create("tv_mobilenet_v2", 10)
    record = pretrained.load_pretrained(model, weights, download=False)
    assert record == {"weights": "MobileNet_V2_Weights.IMAGENET1K_V1", "url": weights.url,
                      "file": path.name, "sha256": digest}
    loaded = model.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_wrong_prefix_is_refused_before_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = create("tv_mobilenet_v2", 10).state_dict()
    weights, path, digest = _fake_weights(tmp_path, monkeypatch, state, wrong_prefix=True)
    model = create("tv_mobilenet_v2", 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        pretrained.load_pretrained(model, weights, download=False)
    assert str(path) in str(info.value) and digest in str(info.value) and weights.hash_prefix in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_weights_of_another_shape_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights, path, _ = _fake_weights(tmp_path, monkeypatch, create("tv_mobilenet_v2", 10).state_dict())
    with pytest.raises(CheckpointError, match="do not fit the architecture"):
        pretrained.load_pretrained(create("tv_mobilenet_v2", 12), weights, download=False)


def test_check_fits_refuses_other_class_counts_and_grey_data() -> None:
    weights = pretrained.resolve("tv_resnet18", "IMAGENET1K_V1")
    spec = {"name": "tv_resnet18", "num_classes": 1000, "in_channels": 3, "input_size": 224}
    pretrained.check_fits(weights, spec)
    with pytest.raises(ConfigError, match=r"teachers\.tv_resnet18\.pretrained: .*1000 classes.*has 100"):
        pretrained.check_fits(weights, {**spec, "num_classes": 100})
    with pytest.raises(ConfigError, match="RGB"):
        pretrained.check_fits(weights, {**spec, "in_channels": 1})


# --- config ---------------------------------------------------------------------------------------
def _params(teachers: dict, data: dict | None = None):
    student = "tv_resnet18" if "tv_resnet34" in teachers else "mobilenet_v1"
    raw = merge(merge(read_yaml(REPO / "params.yaml"), TINY), {
        "data": {**TINY["data"], "name": "imagenet", **(data or {})},
        "teachers": teachers,
        "pairs": {f"{t}-{student}": {"teacher": t, "student": student} for t in teachers},
        "evaluate": {"corruptions": False},  # a streamed set has no decoded test split to corrupt
    })
    return parse_params(raw)


def test_config_accepts_pretrained_tv_teachers() -> None:
    params = _params({"tv_resnet34": {"pretrained": "IMAGENET1K_V1"}})
    assert params.teachers["tv_resnet34"].pretrained == "IMAGENET1K_V1"


@pytest.mark.parametrize("teachers,data,match", [
    ({"resnet14": {"pretrained": "IMAGENET1K_V1"}}, None, r"teachers\.resnet14\.pretrained: 'resnet14' has no torchvision weights"),
    ({"tv_resnet34": {"pretrained": "IMAGENET1K_V2"}}, None, r"teachers\.tv_resnet34\.pretrained: 'IMAGENET1K_V2' is not"),
    ({"tv_resnet34": {"pretrained": "DEFAULT"}}, None, r"teachers\.tv_resnet34\.pretrained: 'DEFAULT' is not"),
    ({"tv_resnet34": {"pretrained": "imagenet1k_v1"}}, None, r"teachers\.tv_resnet34\.pretrained: String should match"),
    ({"tv_resnet34": {"pretrained": "IMAGENET1K_V1"}}, {"name": "cifar100"}, r"teachers\.tv_resnet34\.pretrained: .*data\.name"),
    ({"tv_resnet34": {"pretrained": "IMAGENET1K_V1", "checkpoint": "a.pth", "checkpoint_sha256": "0" * 64}}, None,
     "either checkpoint or pretrained"),
])  # fmt: skip
def test_config_refuses_misplaced_pretrained(teachers: dict, data: dict | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _params(teachers, data)


# --- the train_teacher stage ----------------------------------------------------------------------
LABELS = torch.tensor([0, 1, 2, 999])


def _stage_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, num_classes: int):
    """Fake torchvision weights in a tmp torch.hub cache and a tiny prepared test set of ``num_classes``."""
    from r2kd.data.loader import BatchIterator
    from r2kd.stages import train_teacher

    torch.manual_seed(2)
    state = create("tv_mobilenet_v2", 1000).state_dict()
    weights, path, digest = _fake_weights(tmp_path, monkeypatch, state)
    weights = pretrained.PretrainedWeights(**{**weights.__dict__, "num_classes": 1000})
    monkeypatch.setattr(train_teacher, "resolve", lambda arch, member: weights)
    monkeypatch.chdir(tmp_path)
    meta = {"num_classes": num_classes, "channels": 3, "image_size": 32}
    (tmp_path / "meta.json").write_text("{}")
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    test = BatchIterator(images, LABELS % num_classes, batch_size=4, mean=[0.5] * 3, std=[0.25] * 3,
                         train=False, generator=None)
    data = SimpleNamespace(meta=meta, train=None, test=test, files=[tmp_path / "meta.json"], input_shape=(3, 32, 32))
    monkeypatch.setattr(train_teacher, "load_data", lambda *a, **k: data)

    def no_training(*a, **k):
        raise AssertionError("a pretrained teacher must not be trained")

    monkeypatch.setattr(train_teacher, "Trainer", no_training)
    params = parse_params(merge(merge(read_yaml(REPO / "params.yaml"), TINY), {
        "data": {**TINY["data"], "name": "imagenet"},
        "teachers": {"tv_mobilenet_v2": {"pretrained": "IMAGENET1K_V1"}},
        "pairs": {"mv2-mv1": {"teacher": "tv_mobilenet_v2", "student": "mobilenet_v1"}},
        "runtime": {"device": "cpu"},
        "evaluate": {"corruptions": False},  # a streamed set has no decoded test split to corrupt
    }))
    return train_teacher, params, state, weights, path, digest, test


def test_stage_imports_pretrained_weights_without_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stage, params, state, weights, path, digest, test = _stage_setup(tmp_path, monkeypatch, 1000)
    stage.run(params, "tv_mobilenet_v2")

    out = tmp_path / "runs/teachers/tv_mobilenet_v2"
    arch = {"name": "tv_mobilenet_v2", "num_classes": 1000, "in_channels": 3, "input_size": 32}
    model = load_model(out / "model.pt", arch)
    saved = load_checkpoint(out / "model.pt")["model"]
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in state)
    with torch.no_grad():
        images = test.images
        expected = model(test.normalise(images)).argmax(1).eq(LABELS).float().mean().item()
    metrics = read_json(out / "metrics.json")
    assert metrics["best_top1"] == pytest.approx(100 * expected) and metrics["best_epoch"] == 0
    assert metrics["params"] == PUBLISHED_PARAMS["tv_mobilenet_v2"]
    record = read_json(out / "provenance.json")
    assert record["imported"] is True
    assert record["pretrained"] == {"weights": "MobileNet_V2_Weights.IMAGENET1K_V1", "url": weights.url,
                                    "file": path.name, "sha256": digest}
    assert record["params"]["teachers.tv_mobilenet_v2"] == {"checkpoint": None, "checkpoint_sha256": None,
                                                           "pretrained": "IMAGENET1K_V1"}
    with open(out / "log.csv") as fh:
        assert [row["epoch"] for row in csv.DictReader(fh)] == ["0"]


def test_stage_refuses_a_data_set_of_another_class_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stage, params, *_ = _stage_setup(tmp_path, monkeypatch, 100)
    with pytest.raises(ConfigError, match=r"teachers\.tv_mobilenet_v2\.pretrained: .*1000 classes.*has 100"):
        stage.run(params, "tv_mobilenet_v2")
    assert not (tmp_path / "runs/teachers/tv_mobilenet_v2/model.pt").exists()
