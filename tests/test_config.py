"""params.yaml validation: every bad input stops before compute with an error naming the key."""

from __future__ import annotations

import copy
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from r2kd.config import METHOD_PARAMS, load_params, parse_params
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
    assert set(params.methods) == set(METHOD_PARAMS)  # the default compares every registered method
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
        ("data.name", "imagenet22k", "data.name"),
        ("data.test_fraction", 1.5, "data.test_fraction"),
        ("methods", ["ce", "fitnet"], "methods.1"),
        ("methods", ["kd", "kd"], "methods: duplicate"),
        ("augments", ["default", "rotate"], "augments.1"),
        ("seeds", [], "seeds"),
        ("method_params.r2kd.rank", "fuzzy", "method_params.r2kd.rank"),
        ("method_params.r2kd.temprature", 4, "method_params.r2kd.temprature: unknown key"),
        ("method_params.kd.temperature", -1, "method_params.kd.temperature"),
        ("method_params.dist", _DELETE, "method_params.dist: missing"),
        ("pairs", {"p": {"teacher": "wrn_16_2", "student": "resnet9000"}}, "pairs.p.student"),
        ("pairs", {"p": {"teacher": "resnet56", "student": "resnet8"}}, "pairs.p.teacher"),
        ("pairs", {"p; touch PWNED #": {"teacher": "wrn_16_2", "student": "resnet8"}}, "pair id"),
        ("pairs", {"../../x": {"teacher": "wrn_16_2", "student": "resnet8"}}, "pair id"),
        ("pairs", {"p": {"teacher": "wrn_16_2", "student": "resnet8 --method ce; touch PWNED #"}}, "pairs.p.student"),
        ("pairs.wrn_16_2-resnet8.method_params", {"dkd": {"beta": -1.0}}, "pairs.wrn_16_2-resnet8.method_params.dkd.beta"),
        ("pairs.wrn_16_2-resnet8.method_params", {"fitnet": {}}, "pairs.wrn_16_2-resnet8.method_params.fitnet"),
        ("seeds", ["0; touch PWNED #"], "seeds.0"),
        ("seeds", ["0/../../../../../../victim"], "seeds.0"),
        ("seeds", ["00"], "seeds.0"),
        ("seeds", [1.0], "seeds.0"),
        ("seeds", [True], "seeds.0"),
        ("seeds", [2**64], "seeds must be integers in"),
        ("seeds", [-1], "seeds must be integers in"),
        ("distill.epochs", True, "distill.epochs"),
        ("distill.epochs", 2.0, "distill.epochs"),
        ("runtime.threads", 0, "runtime.threads"),
        ("runtime.threads", 100000, "runtime.threads"),
        ("runtime.device", "mps", "runtime.device"),
        ("runtime.device", "cuda:0; rm -rf /", "runtime.device"),
        ("methods", ["kd; touch PWNED"], "methods.0"),
        ("augments", ["../x"], "augments.0"),
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


def _float_keys(model, prefix: str = ""):
    """The dotted key of every float field reachable from ``model`` (nested sections, dict values)."""
    import types
    import typing

    from pydantic import BaseModel

    def models_in(annotation):
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield "", annotation
        elif typing.get_origin(annotation) is dict:
            key, value = typing.get_args(annotation)
            for name, sub in models_in(value):
                yield name, sub
        elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
            for arg in typing.get_args(annotation):
                yield from models_in(arg)

    for name, field in model.model_fields.items():
        annotation = field.annotation
        if annotation is float or float in typing.get_args(annotation):
            yield f"{prefix}{name}"
        for _, sub in models_in(annotation):
            yield from _float_keys(sub, f"{prefix}{name}.<key>.") if typing.get_origin(annotation) is dict \
                else _float_keys(sub, f"{prefix}{name}.")


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_every_float_param_refuses_non_finite_values_naming_the_key(value):
    """`.inf` / `.nan` are valid YAML floats; every float param refuses them at validation, not mid-run."""
    from r2kd.config import METHOD_PARAMS, Params

    keys = list(_float_keys(Params))
    keys += [k for m, model in METHOD_PARAMS.items() for k in _float_keys(model, f"method_params.{m}.")]
    keys += [k.replace("method_params.", "pairs.wrn_16_2-resnet8.method_params.", 1) for k in keys
             if k.startswith("method_params.")]
    assert {"distill.lr", "distill.weight_decay", "method_params.kd.temperature", "prune.finetune.lr",
            "export.tolerance", "data.test_fraction"} <= set(keys)
    assert not [k for k in keys if "<key>" in k], keys  # a float in a dict of sections: add it here
    for key in keys:
        raw = copy.deepcopy(DEFAULT)
        *parents, last = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
        with pytest.raises(ConfigError) as info:
            parse_params(raw)
        assert f"{key}: Input should be a finite number" in str(info.value), (key, str(info.value))


def test_non_finite_yaml_floats_are_one_line_errors(tmp_path):
    text = (REPO / "params.yaml").read_text().replace("  lr: 0.05\n", "  lr: .inf\n", 1)
    assert ".inf" in text
    (tmp_path / "params.yaml").write_text(text)
    result = subprocess.run([sys.executable, "-m", "r2kd", "--params", str(tmp_path / "params.yaml"), "check"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "train_teacher.lr: Input should be a finite number (got inf)" in result.stderr, result.stderr


def test_every_section_of_the_schema_has_the_strict_base():
    """allow_inf_nan=False (and strict, extra=forbid) live in one base: every section must inherit it."""
    from pydantic import BaseModel

    from r2kd import config

    models = [v for v in vars(config).values() if isinstance(v, type) and issubclass(v, BaseModel)
              and v.__module__ == config.__name__]
    assert len(models) > 10
    assert [m.__name__ for m in models if not issubclass(m, config._Strict)] == []
    assert config._Strict.model_config["allow_inf_nan"] is False


def test_long_pair_id_is_refused_for_its_length_not_its_characters():
    pair = {"teacher": "wrn_16_2", "student": "resnet8"}
    parse_params(with_change("pairs", {"p" * 80: pair}))  # the limit itself is allowed
    for key in ("p" * 81, "wrn_16_2-" + "resnet8_" * 10 + "x" * 4):
        with pytest.raises(ConfigError) as info:
            parse_params(with_change("pairs", {key: pair}))
        message = str(info.value)
        assert f"is {len(key)} characters; at most 80" in message, message
        assert "may use only" not in message and len(message.splitlines()) == 2  # the header and one line


def test_unknown_teacher_lists_known_models():
    raw = with_change("teachers", {"wrn_99": {"checkpoint": None, "checkpoint_sha256": None}})
    raw["pairs"] = {"p": {"teacher": "wrn_99", "student": "resnet8"}}
    with pytest.raises(ConfigError, match="resnet32x4"):
        parse_params(raw)


def test_cli_reports_bad_params_with_exit_code_2_and_no_traceback(tmp_path):
    bad = with_change("distill.lr", -1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    result = subprocess.run([sys.executable, "-m", "r2kd", "--params", str(tmp_path / "params.yaml"), "distill",
                             "wrn_16_2-resnet8", "kd", "default", "0"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "distill.lr" in result.stderr and "-1" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)


def test_cli_selection_must_be_in_params():
    from r2kd.runs import find_run

    params = load_params(REPO / "params.yaml")
    assert find_run(params, "wrn_16_2-resnet8", "kd", "default", 0).student == "resnet8"
    with pytest.raises(ConfigError, match="seeds"):
        find_run(params, "wrn_16_2-resnet8", "kd", "default", 99)
    with pytest.raises(ConfigError, match="pairs"):
        find_run(params, "wrn_16_2-resnet20", "kd", "default", 0)


def test_teacher_smaller_than_student_is_a_warning_not_an_error():
    from r2kd.stages.pair import warn_if_teacher_smaller

    raw = with_change("teachers", {"resnet8": {"checkpoint": None, "checkpoint_sha256": None}})
    raw["pairs"] = {"p": {"teacher": "resnet8", "student": "wrn_16_2"}}
    parse_params(raw)  # valid
    with pytest.warns(UserWarning, match="smaller than its student"):
        warn_if_teacher_smaller("resnet8", "wrn_16_2")


@pytest.mark.parametrize("seed_arg", ["00", "+1", "1.0", "0; touch PWNED"])
def test_cli_seed_argument_is_strict(tmp_path, seed_arg):
    result = subprocess.run([sys.executable, "-m", "r2kd", "--params", str(REPO / "params.yaml"), "distill",
                             "wrn_16_2-resnet8", "kd", "default", seed_arg], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "seed must be a plain decimal integer" in result.stderr
    assert not (tmp_path / "PWNED").exists()


def test_per_pair_override_applies_to_that_pair_only():
    raw = copy.deepcopy(DEFAULT)
    raw["teachers"]["resnet56"] = {"checkpoint": None, "checkpoint_sha256": None}
    raw["pairs"]["resnet56-resnet20"] = {"teacher": "resnet56", "student": "resnet20", "method_params": {"dkd": {"beta": 2.0}}}
    params = parse_params(raw)
    assert params.method_hparams("dkd", pair="resnet56-resnet20").beta == 2.0
    assert params.method_hparams("dkd", pair="wrn_16_2-resnet8").beta == 8.0
    assert params.method_hparams("dkd", "mixup", "resnet56-resnet20").aug_view == "mixup"


def test_same_pair_twice_only_with_different_method_params():
    """r2kd/presets/ablation.yaml runs R2KD with and without the pruned teacher as two pairs of one
    teacher -> student; the same pair twice with the same overrides is still a duplicate."""
    raw = copy.deepcopy(DEFAULT)
    raw["pairs"]["again"] = dict(raw["pairs"]["wrn_16_2-resnet8"])
    with pytest.raises(ConfigError, match="listed twice"):
        parse_params(raw)
    raw["pairs"]["again"]["method_params"] = {"r2kd": {"teacher_weight": 1.0}}
    params = parse_params(raw)
    assert params.method_hparams("r2kd", pair="again").teacher_weight == 1.0
    assert params.method_hparams("r2kd", pair="wrn_16_2-resnet8").teacher_weight == 0.7


def test_ablation_preset_is_the_documented_grid():
    params = load_params(REPO / "r2kd" / "presets" / "ablation.yaml")
    assert params.methods == ["kd", "r2kd"] and params.augments == ["none", "cutmix"]
    full, nopruned = params.pairs
    assert params.method_hparams("r2kd", "cutmix", full).model_dump() == params.method_hparams("r2kd").model_dump()
    assert params.method_hparams("r2kd", "cutmix", nopruned).teacher_weight == 1.0
    assert params.method_hparams("kd", "cutmix", full).aug_view == "cutmix"
    assert params.method_hparams("r2kd", "none", full).aug_view == "none"


def test_warnings_for_settings_that_cannot_take_effect():
    with pytest.warns(UserWarning, match="warmup"):
        parse_params(with_change("method_params.dkd", {"warmup": 20}))
    with pytest.warns(UserWarning, match="near-chance"):
        parse_params(with_change("prune.ratio", 0.9))


# --- YAML: one meaning for both tools ----------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("seeds: [010]\n", "read differently by YAML 1.1 and 1.2"),
    ("seeds: [1_000]\n", "read differently by YAML 1.1 and 1.2"),
    ("data:\n  download: yes\n", "boolean in YAML 1.1"),
    ("data:\n  download: off\n", "boolean in YAML 1.1"),
    ("distill:\n  lr: 5e-4\n", "number in YAML 1.2"),
    ("seeds: [08]\n", "number in YAML 1.2"),
    ("seeds: [0]\nseeds: [1]\n", "duplicate key 'seeds'"),
    ("a: &x [1, 2]\nb: *x\n", "anchors"),
])
def test_yaml_constructs_the_two_tools_read_differently_are_refused(text, expected):
    from r2kd.yamlfile import parse_yaml

    with pytest.raises(ConfigError, match=expected):
        parse_yaml(text)


def test_yaml_alias_bomb_is_refused_quickly_and_small(tmp_path):
    """A 1 KB file of nested aliases expands to gigabytes; refused before any expansion."""
    import resource
    import time

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}]" for i in range(1, 12)]
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    before, began = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(ConfigError, match="anchors|aliases"):
        load_params(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB
    assert time.perf_counter() - began < 5


@pytest.mark.parametrize("make, expected", [
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: (p.write_text("seeds: [0]\n"), p.chmod(0)), "cannot read|valid"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00bad"), "not UTF-8"),
])
def test_unreadable_params_file_is_one_line(tmp_path, make, expected):
    path = tmp_path / "params.yaml"
    make(path)
    result = subprocess.run([sys.executable, "-m", "r2kd", "--params", str(path), "check"], capture_output=True, text=True,
                            cwd=tmp_path)
    path.chmod(0o644) if path.is_file() else None
    assert "Traceback" not in result.stderr
    if "valid" in expected and result.returncode == 0:  # root reads a chmod-0 file: nothing to refuse
        return
    assert result.returncode == 2 and re.search(expected, result.stderr), result.stderr


@pytest.mark.parametrize("make, expected", [
    (lambda p: p.symlink_to("/dev/zero"), r"is a character device \(through a symbolic link\), not a regular file"),
    (lambda p: os.mkfifo(p), r"is a FIFO \(named pipe\), not a regular file"),
    (lambda p: p.write_bytes(b"# padding\n" * 110_000), r"is 1,100,000 bytes, larger than 1,000,000"),
    (lambda p: p.symlink_to(p.parent / "big.yaml") or (p.parent / "big.yaml").write_bytes(b"#" * 1_000_001),
     r"is 1,000,001 bytes, larger than 1,000,000"),
], ids=["symlink-to-dev-zero", "fifo", "too-large", "symlink-to-too-large"])
def test_params_file_must_be_a_regular_file_of_bounded_size(tmp_path, make, expected):
    """/dev/zero would be read without end and a FIFO blocks: both are refused by stat, before any read.
    Run in a subprocess with a timeout, so a regression fails instead of hanging the suite."""
    path = tmp_path / "params.yaml"
    make(path)
    result = subprocess.run([sys.executable, "-m", "r2kd", "--params", str(path), "check"], capture_output=True,
                            text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert re.search(expected, result.stderr) and str(path) in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_params_reader_checks_the_open_descriptor_and_bounds_the_read(tmp_path, monkeypatch):
    """A file swapped or grown between the stat and the open is refused by the descriptor's fstat; one
    that grows after that is read only up to the limit."""
    from r2kd import yamlfile

    path = tmp_path / "params.yaml"
    path.write_text("seeds: [0]\n")
    real_fstat = os.fstat
    monkeypatch.setattr(yamlfile.os, "fstat", lambda fd: os.stat_result(
        (stat.S_IFIFO | 0o644, *real_fstat(fd)[1:])))  # swapped for a FIFO after the path's stat
    with pytest.raises(ConfigError, match="is a FIFO"):
        yamlfile.read_yaml(path)
    monkeypatch.setattr(yamlfile.os, "fstat", real_fstat)
    monkeypatch.setattr(yamlfile, "_check_regular", lambda *_: None)  # it grew past every stat
    monkeypatch.setattr(yamlfile, "MAX_BYTES", 4)
    with pytest.raises(ConfigError, match="larger than 4 bytes"):
        yamlfile.read_yaml(path)


def test_errors_name_the_file_given_with_params(tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(with_change("distill.lr", -1)))
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_params(path)


# --- the schema is a leaf ------------------------------------------------------------------------
def test_schema_and_check_import_no_torch():
    code = ("import sys; import r2kd.config, r2kd.runs, r2kd.cli; "
            "r2kd.cli.main(['--params', sys.argv[1], 'check']); "
            "heavy = [m for m in ('torch', 'torch_pruning', 'torchvision', 'dvc') if m in sys.modules]; "
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code, str(REPO / "params.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_literals_equal_the_registries():
    from typing import get_args

    from r2kd import config, models
    from r2kd.augment import VIEWS

    assert set(get_args(config.ModelName)) == set(models.available())
    assert set(get_args(config.ViewName)) == set(VIEWS)
    assert set(get_args(config.AugmentName)) == {config.DEFAULT_AUGMENT, *VIEWS}
    assert set(get_args(config.MethodName)) == set(config.METHOD_PARAMS)


def test_json_schema_file_is_current():
    import json

    from r2kd.cli import schema_document
    from r2kd.config import json_schema

    committed = json.loads((REPO / "workflow/schemas/params.schema.json").read_text())
    # (workflow/scripts/r2kd runs this checkout's code; a console script `r2kd` may run another's)
    assert committed == json.loads(json.dumps(schema_document(json_schema()))), \
        "out of date; run: workflow/scripts/r2kd schema > workflow/schemas/params.schema.json"
