"""params.yaml validation: every bad input stops before compute with an error naming the key."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from r2kd.config import load_params, parse_params
from r2kd.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((REPO / "params.yaml").read_text())


def with_change(path: str, value) -> dict:
    raw = copy.deepcopy(DEFAULT)
    node = raw
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return raw


_DELETE = object()


def test_default_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.data.name == "digits"
    assert set(params.methods) == {"ce", "kd", "dist", "dkd", "r2kd"}
    assert params.method_hparams("r2kd").aug_view == "cutmix"
    assert params.method_hparams("kd").aug_view == "none"
    assert params.method_hparams("kd", "mixup").aug_view == "mixup"


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("distill.lr", -0.1, "distill.lr"),
        ("distill.lr", "fast", "distill.lr"),
        ("distill.epochs", 0, "distill.epochs"),
        ("distill.milestones", [5, 3], "distill.milestones"),
        ("distill.learning_rate", 0.1, "distill.learning_rate: unknown key"),
        ("train_teacher.momentum", 1.5, "train_teacher.momentum"),
        ("prune.ratio", 1.0, "prune.ratio"),
        ("prune.method", "random", "prune.method"),
        ("prune.bn_mode", "frozen", "prune.bn_mode"),
        ("data.name", "imagenet", "data.name"),
        ("data.test_fraction", 1.5, "data.test_fraction"),
        ("methods", ["ce", "fitnet"], "unknown method 'fitnet'"),
        ("methods", ["kd", "kd"], "methods: duplicate"),
        ("augments", ["default", "rotate"], "unknown augment 'rotate'"),
        ("seeds", [], "seeds"),
        ("method_params.r2kd.rank", "fuzzy", "method_params.r2kd.rank"),
        ("method_params.r2kd.temprature", 4, "method_params.r2kd.temprature: unknown key"),
        ("method_params.kd.temperature", -1, "method_params.kd.temperature"),
        ("method_params.dist", _DELETE, "method_params.dist: missing"),
        ("pairs", [{"teacher": "wrn_16_2", "student": "resnet9000"}], "resnet9000"),
        ("pairs", [{"teacher": "resnet56", "student": "resnet8"}], "pairs[0].teacher"),
        ("runtime.device", "tpu", "runtime.device"),
        ("runtime.amp", "fp8", "runtime.amp"),
        ("teachers.wrn_16_2.checkpoint", "t.pth", "checkpoint_sha256 is required"),
        ("unknown_section", {}, "unknown_section: unknown key"),
    ],
)
def test_bad_value_names_the_key(path, value, expected):
    with pytest.raises(ConfigError) as info:
        parse_params(with_change(path, value))
    assert expected in str(info.value)


def test_unknown_teacher_lists_known_models():
    raw = with_change("teachers", {"wrn_99": {"checkpoint": None, "checkpoint_sha256": None}})
    raw["pairs"] = [{"teacher": "wrn_99", "student": "resnet8"}]
    with pytest.raises(ConfigError, match="resnet32x4"):
        parse_params(raw)


def test_cli_reports_bad_params_with_exit_code_2_and_no_traceback(tmp_path):
    bad = with_change("distill.lr", -1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    result = subprocess.run([sys.executable, "-m", "r2kd", "--params", str(tmp_path / "params.yaml"), "distill",
                             "--teacher", "wrn_16_2", "--student", "resnet8", "--method", "kd", "--augment",
                             "default", "--seed", "0"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "distill.lr" in result.stderr and "-1" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)


def test_cli_selection_must_be_in_params():
    from r2kd.stages.distill import check_selection

    params = load_params(REPO / "params.yaml")
    check_selection(params, "wrn_16_2", "resnet8", "kd", "default", 0)
    with pytest.raises(ConfigError, match="seeds"):
        check_selection(params, "wrn_16_2", "resnet8", "kd", "default", 99)
    with pytest.raises(ConfigError, match="pair"):
        check_selection(params, "wrn_16_2", "resnet20", "kd", "default", 0)


def test_teacher_smaller_than_student_is_a_warning_not_an_error():
    raw = with_change("teachers", {"resnet8": {"checkpoint": None, "checkpoint_sha256": None}})
    raw["pairs"] = [{"teacher": "resnet8", "student": "wrn_16_2"}]
    with pytest.warns(UserWarning, match="smaller than its student"):
        parse_params(raw)
