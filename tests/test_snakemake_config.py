"""Snakemake's own config: params.yaml is its `configfile:`, checked with snakemake.utils.validate
against workflow/schemas/params.schema.json; `--config section='{key: value}'` and `--configfile f.yaml`
override it for one run, validated like params.yaml, read by the jobs ($R2KD_PARAMS), recorded in
their results, and kept out of dvc.lock (docs/snakemake.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO, make_repo, run

SCHEMA = REPO / "workflow/schemas/params.schema.json"


def test_snakemake_validate_accepts_params_yaml_and_refuses_a_bad_value():
    from snakemake.utils import validate
    from snakemake_interface_common.exceptions import WorkflowError

    from r2kd.yamlfile import read_yaml

    params = read_yaml(REPO / "params.yaml")
    validate(params, str(SCHEMA), set_default=False)
    params["distill"]["lr"] = "fast"
    with pytest.raises(WorkflowError):
        validate(params, str(SCHEMA), set_default=False)


def test_a_result_made_with_overrides_says_so(tmp_path, monkeypatch):
    from r2kd.recorded import OVERRIDES, PARAMS_ENV, mark_overrides, params_file

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("{}\n")
    monkeypatch.delenv(PARAMS_ENV, raising=False)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert params_file() == "params.yaml" and mark_overrides({"a": 1}) == {"a": 1}
    monkeypatch.setenv(PARAMS_ENV, "params.yaml")  # what Snakemake sets without overrides
    assert mark_overrides({"a": 1}) == {"a": 1}
    monkeypatch.setenv(PARAMS_ENV, ".r2kd/snakemake/params-x.yaml")
    assert mark_overrides({"a": 1}) == {"a": 1, OVERRIDES: ".r2kd/snakemake/params-x.yaml"}
    monkeypatch.setenv("DVC_STAGE", "prepare")  # DVC's stages read the file DVC tracks
    assert params_file() == "params.yaml"


def test_the_handoff_leaves_results_made_with_overrides_out_of_dvc_lock(tmp_path, monkeypatch):
    from r2kd import handoff

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "params.yaml").write_text("seeds: [0]\n")
    other = tmp_path / ".r2kd/snakemake/params-x.yaml"
    other.parent.mkdir(parents=True)
    other.write_text("seeds: [1]\n")
    handoff.note_result("prepare", ".r2kd/snakemake/params-x.yaml")
    said = []
    assert handoff.record_in_dvc(say=said.append) == []
    assert "made with snakemake --config/--configfile overrides" in said[0]
    assert "not recorded in dvc.lock" in said[0]
    assert not (tmp_path / ".r2kd/unrecorded/prepare").exists()


def dry_run(root: Path, *args: str):
    return run(["snakemake", "-n", "--cores", "1", *args], root, check=False)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repo(tmp_path_factory.mktemp("smkconfig") / "repo", git=False)


@pytest.mark.parametrize("arg, says", [
    ("distill={lr: -1}", "distill.lr"),  # merged into the section, refused by r2kd naming the key
    ("distill={lr: 1e-3}", "1e-3"),  # YAML 1.1 and 1.2 read it differently: refused, as in params.yaml
    ("distill={lrr: 0.1}", "distill.lrr: unknown key"),
    ("seeds=[0; x]", "seeds"),
])
def test_a_bad_config_override_is_refused_naming_the_key(repo, arg, says):
    result = dry_run(repo, "--config", arg)
    assert result.returncode != 0
    assert says in result.stdout + result.stderr


def test_snakemake_itself_refuses_dotted_config_keys(repo):
    result = dry_run(repo, "--config", "distill.lr=0.02")
    assert result.returncode != 0
    assert "valid identifier" in result.stdout + result.stderr


def test_an_override_merges_into_its_section_and_the_jobs_read_it(repo):
    result = dry_run(repo, "--config", "distill={lr: 0.02}", "--printshellcmds")
    assert result.returncode == 0, result.stderr
    name = next(word for word in result.stderr.split() if word.startswith(".r2kd/snakemake/params-")).rstrip(":")
    effective = yaml.safe_load((repo / name).read_text())
    base = yaml.safe_load((repo / "params.yaml").read_text())
    assert effective["distill"] == {**base["distill"], "lr": 0.02}  # merged: the other keys stay
    assert {k: v for k, v in effective.items() if k != "distill"} == {k: v for k, v in base.items() if k != "distill"}
    # a --configfile is the same, and the same values name the same file
    (repo / "lr.yaml").write_text("distill:\n  lr: 0.02\n")
    again = dry_run(repo, "--configfile", "lr.yaml")
    assert again.returncode == 0, again.stderr
    assert "--configfile lr.yaml" in again.stderr
    # no override, or one equal to params.yaml: the jobs read params.yaml
    same = dry_run(repo, "--config", f"distill={{lr: {base['distill']['lr']}}}")
    assert same.returncode == 0 and ".r2kd/snakemake/params-" not in same.stderr


@pytest.mark.slow
def test_an_override_reaches_the_job_its_result_and_dvc_status_but_not_dvc_lock(tmp_path):
    root = make_repo(tmp_path / "repo")
    run(["dvc", "repro", "prepare"], root)
    lock = (root / "dvc.lock").read_text()
    meta = json.loads((root / "data/prepared/meta.json").read_text())
    limit = meta["params"]["data"]["train_limit"]
    # (--config takes every word after it: targets go first)
    result = run(["snakemake", "prepare", "--cores", "1", "--config", f"data={{train_limit: {limit - 2}}}"], root)
    out = result.stdout + result.stderr
    meta = json.loads((root / "data/prepared/meta.json").read_text())
    assert meta["params"]["data"]["train_limit"] == limit - 2  # the job read the override
    assert "not recorded in dvc.lock" in out
    assert (root / "dvc.lock").read_text() == lock
    status = json.loads(run(["dvc", "status", "--json"], root).stdout)
    assert "prepare" in status  # DVC shows the result made with other values as modified
    # and without the override, Snakemake remakes it with params.yaml's values, which DVC records
    plan = run(["snakemake", "-n", "--cores", "1", "prepare"], root)
    assert "rule prepare" in plan.stdout and "data.train_limit" in plan.stderr
