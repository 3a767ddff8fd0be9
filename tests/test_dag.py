"""DVC and Snakemake must run the same DAG: same stages, commands, inputs and outputs.

The DVC side comes from DVC's own resolver (dvc.yaml + params.yaml); the Snakemake side from
`snakemake --dry-run --forceall --printshellcmds`, parsed. Both are built for the default params
and for changed pair/method/augment/seed lists.
"""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import REPO, make_repo, run
from r2kd import paths
from r2kd.config import load_params
from r2kd.dag import load_stages, upstream_outputs
from r2kd.runs import student_runs


def snakemake_jobs(root) -> dict[str, dict]:
    out = run(["snakemake", "--dry-run", "--forceall", "--printshellcmds", "--cores", "1"], root).stdout
    jobs: dict[str, dict] = {}
    current = None
    for line in out.splitlines():
        match = re.match(r"^(?:local)?rule (\S+):$", line)
        if match:
            current = jobs.setdefault(match.group(1), {"input": [], "output": [], "cmd": None})
            continue
        if current is None:
            continue
        stripped = line.strip()
        for key in ("input", "output"):
            if stripped.startswith(f"{key}: "):
                current[key] = [p.strip() for p in stripped[len(key) + 2:].split(",")]
        if stripped.startswith("Shell command: "):
            current["cmd"] = stripped[len("Shell command: "):]
    return jobs


def assert_same_dag(root) -> None:
    stages = load_stages(root)
    jobs = snakemake_jobs(root)
    assert set(jobs) - {"all"} == {s.rule_name for s in stages}
    for stage in stages:
        job = jobs[stage.rule_name]
        assert sorted(job["output"]) == sorted(stage.outs), stage.name
        expected_inputs = sorted(p for dep in stage.deps for p in upstream_outputs(dep, stages))
        assert sorted(job["input"]) == expected_inputs, stage.name
        assert " ".join(job["cmd"].split()) == " ".join(stage.cmd.split()), stage.name


@pytest.mark.slow
def test_default_dag_agrees(tmp_path):
    root = make_repo(tmp_path / "repo", override={}, git=True)
    # the default params.yaml, untouched
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    assert_same_dag(root)


@pytest.mark.slow
def test_changed_lists_dag_agrees(tmp_path):
    root = make_repo(tmp_path / "repo", override={
        "teachers": {"resnet14": {"checkpoint": None, "checkpoint_sha256": None},
                     "wrn_16_2": {"checkpoint": None, "checkpoint_sha256": None}},
        "pairs": [{"teacher": "resnet14", "student": "resnet8"}, {"teacher": "wrn_16_2", "student": "resnet8"},
                  {"teacher": "wrn_16_2", "student": "wrn_16_1"}],
        "methods": ["kd", "dist", "r2kd"],
        "augments": ["default", "mixup"],
        "seeds": [3, 7],
    })
    assert_same_dag(root)
    stages = load_stages(root)
    assert sum(s.group == "distill" for s in stages) == 3 * 3 * 2 * 2
    assert sum(s.group == "train_teacher" for s in stages) == 2  # each teacher once, shared by its pairs


def test_paths_module_matches_dvc_outputs():
    """r2kd/paths.py and dvc.yaml spell the same artefact paths."""
    params = load_params(REPO / "params.yaml")
    outs = {out for stage in load_stages(REPO) for out in stage.outs}
    for arch in params.teachers:
        assert str(paths.teacher_dir(arch) / "model.pt") in outs
        assert str(paths.pruned_dir(arch) / "model.pt") in outs
    for run_ in student_runs(params):
        for name in ("model.pt", "metrics.json", "log.csv"):
            assert str(run_.dir / name) in outs
    assert len({str(r.dir) for r in student_runs(params)}) == len(student_runs(params))  # no two runs share a path


def test_every_declared_param_exists_and_is_read():
    """DVC fails on a params key missing from params.yaml; a typo would only show at `dvc repro`."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for stage in load_stages(REPO):
        for key in stage.params:
            node = raw
            for part in key.split("."):
                assert part in node, f"{stage.name}: params key {key} missing from params.yaml"
                node = node[part]


def test_student_key_does_not_touch_teacher_stages():
    for stage in load_stages(REPO):
        if stage.group in ("prepare", "train_teacher", "prune"):
            assert not any(k.startswith(("distill", "method_params", "methods", "seeds")) for k in stage.params), stage.name
