"""End to end: `dvc repro` and `snakemake --cores 2` on a tiny config in a copy of the repository.

Both tools must produce the same files with the same numbers (CPU runs are deterministic), an
unchanged rerun must do nothing, and `dvc exp run -S` on a student key must leave the teacher alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_repo, run
from r2kd.files import sha256_file

pytestmark = pytest.mark.slow


def outputs(root: Path) -> dict[str, Path]:
    found = {}
    for sub in ("data/prepared", "runs", "reports"):
        for path in (root / sub).rglob("*"):
            if path.is_file() and path.name != ".gitignore":
                found[str(path.relative_to(root))] = path
    return found


def comparable(path: Path):
    """What must be identical across tools and processes: everything but wall-clock timings."""
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        data.pop("timing", None) if isinstance(data, dict) else None
        return data
    if path.suffix == ".png":
        return path.stat().st_size > 0
    return sha256_file(path)


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("pipeline")
    dvc_repo = make_repo(base / "dvc")
    smk_repo = make_repo(base / "smk")
    dvc_log = run(["dvc", "repro"], dvc_repo)
    smk_log = run(["snakemake", "--cores", "2"], smk_repo)
    return dvc_repo, smk_repo, dvc_log, smk_log


def test_dvc_and_snakemake_give_identical_outputs(both_runs):
    dvc_repo, smk_repo, *_ = both_runs
    dvc_out, smk_out = outputs(dvc_repo), outputs(smk_repo)
    assert sorted(dvc_out) == sorted(smk_out)
    expected = {"reports/summary.json", "reports/summary.md", "reports/eval.json", "reports/metrics.json",
                "reports/accuracy_per_epoch.png", "reports/accuracy_per_method.png",
                "runs/teachers/resnet14/model.pt", "runs/pruned/resnet14/model.pt",
                "runs/students/resnet14-resnet8/r2kd-default/s1/model.pt"}
    assert expected <= set(dvc_out)
    for rel in dvc_out:
        assert comparable(dvc_out[rel]) == comparable(smk_out[rel]), rel


def test_outputs_have_required_content(both_runs):
    dvc_repo, *_ = both_runs
    summary = json.loads((dvc_repo / "reports/summary.json").read_text())
    assert {(r["student"], r["method"], r["seed"]) for r in summary["runs"]} == {
        (s, m, seed) for s in ("resnet8", "wrn_16_1") for m in ("ce", "r2kd") for seed in (0, 1)}
    assert {(g["pair"], g["method"], g["n"]) for g in summary["groups"]} == {
        (p, m, 2) for p in ("resnet14-resnet8", "resnet14-wrn_16_1") for m in ("ce", "r2kd")}
    for group in summary["groups"]:
        assert group["best_top1_std"] >= 0 and group["best_top1_mean"] >= group["last_top1_mean"] - 1e-9
    for rec in summary["runs"]:
        for key in ("dataset", "teacher", "student", "method", "seed", "best_top1", "last_top1", "best_epoch", "params", "macs"):
            assert key in rec
    metrics = json.loads((dvc_repo / "runs/students/resnet14-resnet8/r2kd-default/s0/metrics.json").read_text())
    prov = metrics["provenance"]
    assert prov["seed"] == 0 and "torch" in prov["versions"] and prov["params"]["distill"]["epochs"] == 2
    assert set(prov["inputs_sha256"]) >= {"data/prepared/train.pt", "runs/teachers/resnet14/model.pt"}
    assert metrics["timing"]["wall_seconds"] > 0
    log = (dvc_repo / "runs/students/resnet14-resnet8/r2kd-default/s0/log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,") and "value_aug" in log[0] and len(log) == 3
    md = (dvc_repo / "reports/summary.md").read_text()
    assert "mean ± sample std" in md and "| resnet14-resnet8 | r2kd |" in md
    import torch

    blob = torch.load(dvc_repo / "runs/students/resnet14-resnet8/ce-default/s0/model.pt", weights_only=True)
    assert blob["arch"]["name"] == "resnet8"


def test_shared_teacher_is_trained_once(both_runs):
    _, _, dvc_log, smk_log = both_runs
    assert dvc_log.stdout.count("Running stage 'train_teacher@resnet14'") == 1
    assert (smk_log.stdout + smk_log.stderr).count("rule train_teacher__resnet14:") == 1


def test_unchanged_rerun_does_nothing(both_runs):
    dvc_repo, smk_repo, *_ = both_runs
    assert "Data and pipelines are up to date" in run(["dvc", "repro"], dvc_repo).stdout
    smk = run(["snakemake", "--cores", "2"], smk_repo)
    assert "Nothing to be done" in smk.stdout + smk.stderr


def test_exp_run_on_student_key_keeps_the_teacher(both_runs):
    dvc_repo, *_ = both_runs
    teacher = dvc_repo / "runs/teachers/resnet14/model.pt"
    before = sha256_file(teacher)
    run(["git", "add", "-A"], dvc_repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "baseline"], dvc_repo)
    log = run(["dvc", "exp", "run", "-S", "distill.lr=0.02", "-n", "lr002"], dvc_repo).stdout
    assert "Running stage 'distill@" in log
    assert "Running stage 'train_teacher@" not in log and "Running stage 'prune@" not in log
    assert sha256_file(teacher) == before
    shown = run(["dvc", "exp", "show", "--json"], dvc_repo).stdout
    assert "lr002" in shown and "best_top1" in shown


def test_snakemake_reruns_only_what_a_param_touches(both_runs):
    _, smk_repo, *_ = both_runs
    params = (smk_repo / "params.yaml").read_text().replace("seeds:\n- 0\n- 1", "seeds:\n- 0\n- 1\n- 2")
    assert "- 2" in params
    (smk_repo / "params.yaml").write_text(params)
    plan = run(["snakemake", "--dry-run", "--cores", "2"], smk_repo).stdout
    assert "distill__pair0_r2kd_default_2" in plan and "distill__pair0_ce_default_2" in plan
    assert "train_teacher__" not in plan and "distill__pair0_r2kd_default_0" not in plan
