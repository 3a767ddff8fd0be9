"""The prune stage and torch_pruning's rounding / fine-tune (issue 10): the default output is bit for bit
what it was, round_to gives fast-kernel widths, the stage measures its product deterministically."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from conftest import REPO, TINY, merge
from r2kd import paths
from r2kd.config import PruneConfig, PruneFinetune, parse_params
from r2kd.files import read_json, sha256_state_dict
from r2kd.models import create
from r2kd.pruning import prune_teacher
from r2kd.pruning.measure import compare_many, frozen_copy
from r2kd.pruning.methods import rounded_kept
from r2kd.yamlfile import read_yaml

torch.set_num_threads(1)


def _seeded_wrn() -> nn.Module:
    """wrn_16_2 for digits-shaped input with seeded weights and non-trivial BatchNorm."""
    torch.manual_seed(0)
    model = create("wrn_16_2", 10, in_channels=1, input_size=8)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def _example() -> torch.Tensor:
    return torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))


# Hashes of the pruned state dicts produced by git 8006a51 (before round_to / fine-tune existed),
# for the teacher above, torch 2.14.1 / torch-pruning 1.6.1 on CPU.
BEFORE = {
    "l1_unstructured": "d6fd8d7c3ac0ac99554e467dc70759c4e310d587e76c4d1c9df7d23fcc9fb1fa",
    "torch_pruning": "199cd68b588b5663ee5dd2f5038e5838a7bd929e8fc4100cdb7f37f5841117d8",
}


@pytest.mark.parametrize("method", sorted(BEFORE))
def test_default_prune_output_is_bit_identical_to_before(method: str) -> None:
    result = prune_teacher(_seeded_wrn(), _example(), PruneConfig(method=method))
    assert sha256_state_dict(result.model.state_dict()) == BEFORE[method]


# --- config -----------------------------------------------------------------------------------


def test_config_defaults_keep_the_reference() -> None:
    cfg = PruneConfig()
    assert cfg.round_to is None and cfg.finetune.epochs == 0
    assert cfg.finetune == PruneFinetune()
    ft = PruneConfig.model_validate({"method": "torch_pruning", "round_to": 8, "finetune": {"epochs": 2, "milestones": [1]}})
    assert ft.finetune.recipe().epochs == 2 and ft.finetune.recipe().milestones == [1]


@pytest.mark.parametrize("bad,match", [
    ({"round_to": 8}, "torch_pruning only"),
    ({"finetune": {"epochs": 1}}, "torch_pruning only"),
    ({"method": "torch_pruning", "round_to": 1}, "greater than or equal to 2"),
    ({"method": "torch_pruning", "finetune": {"epochs": -1}}, "greater than or equal to 0"),
    ({"method": "torch_pruning", "finetune": {"epochs": "1"}}, "valid integer"),
    ({"method": "torch_pruning", "finetune": {"milestones": [2, 1]}}, "strictly increasing"),
    ({"method": "torch_pruning", "finetune": {"epoch": 1}}, "Extra inputs"),
])
def test_config_refuses(bad: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        PruneConfig.model_validate(bad)


# --- round_to ---------------------------------------------------------------------------------


@pytest.mark.parametrize("current,n_pruned,round_to,kept", [
    (64, 7, 8, 56), (64, 7, 16, 48), (128, 13, 8, 112), (16, 2, 8, 8),
    (16, 2, 16, 16),  # torch-pruning itself would keep 0 of 16 here
    (32, 4, 16, 16), (6, 1, 8, 5), (8, 1, 8, 8),
])
def test_rounded_kept(current: int, n_pruned: int, round_to: int, kept: int) -> None:
    assert rounded_kept(current, n_pruned, round_to) == kept


@pytest.mark.parametrize("round_to,widths", [(None, {14, 28, 57, 115}), (8, {8, 24, 56, 112}), (16, {16, 48, 112})])
def test_round_to_gives_multiples_and_a_sound_network(round_to, widths) -> None:
    teacher = _seeded_wrn()
    result = prune_teacher(teacher, _example(), PruneConfig(method="torch_pruning", round_to=round_to))
    convs = {m.out_channels for m in result.model.modules() if isinstance(m, nn.Conv2d)}
    assert convs == widths  # the soundness check inside prune_teacher passed too
    assert result.model(_example()).shape == (2, 10)


# --- measuring the product ----------------------------------------------------------------------


def _batches(n=70, bs=32, seed=5):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, n, bs)]


def compare(teacher, pruned, batches, bn_mode):
    """Teacher vs one pruned teacher, scored on a frozen copy in ``bn_mode`` (as the prune stage does)."""
    return compare_many(teacher, {"pruned": frozen_copy(pruned, bn_mode)}, batches)["pruned"]


def test_compare_with_itself_in_eval_mode() -> None:
    model = _seeded_wrn()
    scores = compare(model, model, _batches(), "eval")
    assert scores["agreement"] == 100.0 and scores["teacher_top1"] == scores["pruned_top1"]
    assert abs(scores["kl_t1"]) < 1e-12 and abs(scores["kl_t4"]) < 1e-12


def test_compare_in_train_bn_mode_uses_batch_statistics_and_leaves_the_model_alone() -> None:
    teacher, pruned = _seeded_wrn(), prune_teacher(_seeded_wrn(), _example(), PruneConfig()).model
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    batches = _batches(n=65)  # the last batch holds one image: folded into the one before
    scores = compare(teacher, pruned, batches, "train")
    assert all(torch.equal(v, pruned.state_dict()[k]) for k, v in before.items())  # running stats untouched
    assert not pruned.training
    # by hand: a train-mode-BN copy on the merged batches, KL(teacher || pruned)
    student = frozen_copy(pruned, "train")
    merged = [batches[0], (torch.cat([batches[1][0], batches[2][0]]), torch.cat([batches[1][1], batches[2][1]]))]
    agree = kl = 0.0
    with torch.no_grad():
        for x, _ in merged:
            zt, zp = teacher(x).double(), student(x).double()
            agree += float((zt.argmax(1) == zp.argmax(1)).sum())
            lt, lp = zt.log_softmax(1), zp.log_softmax(1)
            kl += float((lt.exp() * (lt - lp)).sum())
    assert scores["agreement"] == pytest.approx(100 * agree / 65)
    assert scores["kl_t1"] == pytest.approx(kl / 65, rel=1e-9)
    assert scores != compare(teacher, pruned, batches, "eval")


# --- the stage ----------------------------------------------------------------------------------


def _stage_params(prune: dict):
    raw = merge(read_yaml(REPO / "params.yaml"), merge(TINY, {"prune": prune}))
    return parse_params(raw)


def _prepare_with_teacher(params) -> nn.Module:
    from r2kd.data.write import prepare
    from r2kd.modelfile import arch_spec, build, save_model

    meta = prepare(params.data, paths.PREPARED)
    spec = arch_spec("resnet14", meta)
    torch.manual_seed(0)
    teacher = build(spec)
    save_model(paths.teacher_dir("resnet14") / "model.pt", teacher, spec)
    return teacher


def test_prune_stage_default_is_the_reference_and_measures_it(tmp_path, monkeypatch) -> None:
    from r2kd.modelfile import load_model
    from r2kd.stages import prune as stage

    monkeypatch.chdir(tmp_path)
    params = _stage_params({})
    _prepare_with_teacher(params)
    stage.run(params, "resnet14")
    out = paths.pruned_dir("resnet14")
    summary = read_json(out / "prune.json")
    teacher = load_model(paths.teacher_dir("resnet14") / "model.pt")
    example = torch.zeros(2, *teacher.conv1.weight.shape[1:2], 8, 8)
    direct = prune_teacher(teacher, example, params.prune).model
    assert sha256_state_dict(load_model(out / "model.pt").state_dict()) == sha256_state_dict(direct.state_dict())
    assert summary["method"] == "l1_unstructured" and summary["bn_mode"] == "train" and summary["finetune_epochs"] == 0
    assert "finetune_test_top1" not in summary
    for part in ("as_distilled", "eval_mode"):
        assert set(summary[part]) == {"teacher_top1", "pruned_top1", "agreement", "kl_t1", "kl_t4"}
    assert summary["eval_mode"]["pruned_top1"] == pytest.approx(summary["top1_after"])
    assert summary["measure_batch_size"] == stage.MEASURE_BATCH == 64
    keys = [*summary, *summary["as_distilled"], *summary["eval_mode"]]
    assert not [k for k in keys if k.endswith("_ms") or "second" in k or "speed" in k]  # wall clock: timing only
    timing = read_json(paths.timing_file(out))
    assert {"teacher_ms", "pruned_eval_ms", "pruned_bn_train_ms", "speedup_eval", "speedup_bn_train"} <= set(timing)


def test_prune_stage_finetune_is_deterministic_and_leaves_no_state(tmp_path, monkeypatch) -> None:
    from r2kd.modelfile import load_model
    from r2kd.stages import prune as stage

    monkeypatch.chdir(tmp_path)
    params = _stage_params({"method": "torch_pruning", "round_to": 8, "finetune": {"epochs": 1, "batch_size": 32}})
    _prepare_with_teacher(params)
    out = paths.pruned_dir("resnet14")
    results = []
    for _ in range(2):
        stage.run(params, "resnet14")
        results.append(((out / "prune.json").read_text(), sha256_state_dict(load_model(out / "model.pt").state_dict())))
        assert not paths.state_file(out).exists()
    assert results[0] == results[1]
    summary = json.loads(results[0][0])
    assert summary["round_to"] == 8 and summary["finetune_epochs"] == 1 and len(summary["finetune_test_top1"]) == 1
    assert "top1_after_before_finetune" in summary


def test_report_shows_agreement_and_kl_columns() -> None:
    from r2kd.stages.report import _agreement, markdown

    prune = {"top1_after": 90.0, "params": 10, "macs": 20, "nonzero_fraction_after": 1.0, "bn_mode": "train",
             "round_to": 8, "finetune_epochs": 2,
             "as_distilled": {"agreement": 97.5, "kl_t1": 0.0123, "kl_t4": 0.0456},
             "eval_mode": {"agreement": 99.0, "kl_t4": 0.001}}
    teacher = {"arch": "wrn_16_2", "best_top1": 99.0, "last_top1": 98.0, "params": 100, "macs": 200,
               "pruned": {"method": "torch_pruning", "ratio": 0.1, "top1": 90.0, "params": 10, "macs": 20, **_agreement(prune)}}
    text = markdown("digits", [], [teacher])
    assert "| agreement | KL T=1 | KL T=4 | pruned top-1 (BN eval) | agreement (eval BN) |" in text
    assert "torch_pruning, 0.1, round_to 8, fine-tune 2 ep" in text and "| 97.50 | 0.0123 | 0.0456 | — | 99.00 | 0.0010 |" in text
    old = copy.deepcopy(teacher)
    old["pruned"].update(_agreement({}))  # a prune.json from before the stage measured agreement
    assert "| — | — | — | — | — | — |" in markdown("digits", [], [old])


def test_published_numbers_are_shown_only_where_the_setting_matches() -> None:
    import yaml

    from r2kd.config import parse_params
    from r2kd.stages.report import published_top1

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "r2kd/presets/cifar100.yaml").read_text())
    params = parse_params(raw)
    dkd = lambda pair: params.method_hparams("dkd", "none", pair).model_dump()  # noqa: E731
    assert published_top1(params, "cifar100", "resnet56", "resnet20", "dkd", dkd("resnet56-resnet20")) == 71.97
    assert published_top1(params, "cifar100", "resnet56", "resnet20", "dkd", {**dkd("resnet56-resnet20"), "beta": 8.0}) is None
    assert published_top1(params, "cifar100", "resnet56", "resnet20", "dkd", {**dkd("resnet56-resnet20"), "aug_view": "cutmix"}) is None
    raw["distill"]["epochs"] = 6
    raw["distill"]["milestones"] = [4, 5]
    short = parse_params(raw)
    assert published_top1(short, "cifar100", "resnet56", "resnet20", "dkd", dkd("resnet56-resnet20")) is None
    assert published_top1(params, "digits", "resnet56", "resnet20", "dkd", dkd("resnet56-resnet20")) is None
