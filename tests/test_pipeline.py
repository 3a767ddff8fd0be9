"""End to end: `dvc repro` and `snakemake --cores 2` on a tiny config in a copy of the repository,
called as the README shows (`.venv/bin/dvc ...`) from a shell where the venv is not activated.

Both tools must produce the same files with the same bytes (CPU runs are deterministic), an
unchanged rerun must do nothing, `dvc exp run -S` must rerun only what a key touches and restore an
earlier value from DVC's run cache, and a params change must reach Snakemake after DVC made the files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import copy_repo, run
from r2kd import paths
from r2kd.config import load_params
from r2kd.files import sha256_file
from r2kd.stagecode import STAGE_CODE

pytestmark = pytest.mark.slow

STUDENT = "runs/students/resnet14-resnet8/s0/r2kd-default"


def outputs(root: Path) -> dict[str, Path]:
    found = {}
    for sub in ("data/prepared", "runs", "reports"):
        for path in (root / sub).rglob("*"):
            if path.is_file() and path.name not in (".gitignore", ".snakemake_timestamp"):  # tools' own markers
                found[str(path.relative_to(root))] = path
    return found


def comparable(path: Path):
    """Every output is identical across tools and processes, except what a clock measured (ONNX
    latency, and the plot drawn from it) and PNG encodings."""
    return path.stat().st_size > 0 if path.suffix == ".png" or path.name == "latency.json" else sha256_file(path)


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory, built_checkouts):
    """This module's own copies of the session's two built checkouts (its tests change them)."""
    base = tmp_path_factory.mktemp("pipeline")
    dvc_repo, smk_repo, dvc_log, smk_log = built_checkouts
    return copy_repo(dvc_repo, base / "dvc"), copy_repo(smk_repo, base / "smk"), dvc_log, smk_log


def test_dvc_and_snakemake_give_identical_outputs(both_runs):
    dvc_repo, smk_repo, *_ = both_runs
    dvc_out, smk_out = outputs(dvc_repo), outputs(smk_repo)
    for stage in STAGE_CODE:  # DVC's code stamps (Snakemake has DVC write them when it records its
        # results in dvc.lock: r2kd/handoff.py); Snakemake's own live in .r2kd/code, same content
        dvc_stamp = dvc_out[str(paths.code_stamp(stage))]
        assert dvc_stamp.read_text() == (smk_repo / ".r2kd" / "code" / f"{stage}.json").read_text()
    assert sorted(dvc_out) == sorted(smk_out)
    expected = {"reports/summary.json", "reports/summary.md", "reports/summary.csv", "reports/curves.csv",
                "reports/eval.json", "reports/metrics.json", "reports/accuracy_per_epoch.png",
                "reports/accuracy_per_method.png", "runs/teachers/resnet14/model.pt", "runs/pruned/resnet14/model.pt",
                "runs/pairs/resnet14-resnet8.json", "runs/checked.txt", f"{STUDENT}/model.pt", f"{STUDENT}/provenance.json"}
    assert expected - {"runs/checked.txt"} <= set(smk_out) and (dvc_repo / "runs/checked.txt").is_file()
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
    metrics = json.loads((dvc_repo / STUDENT / "metrics.json").read_text())
    assert {"best_top1", "last_top1"} <= set(metrics) and all(isinstance(v, (int, float)) for v in metrics.values())
    prov = json.loads((dvc_repo / STUDENT / "provenance.json").read_text())
    assert prov["seed"] == 0 and "torch" in prov["versions"] and prov["params"]["distill"]["epochs"] == 2
    assert set(prov["inputs_sha256"]) >= {"data/prepared/train.pt", "runs/pairs/resnet14-resnet8.json"}
    assert prov["method"] == "r2kd" and prov["aug_view"] == "cutmix"
    pair = json.loads((dvc_repo / "runs/pairs/resnet14-resnet8.json").read_text())
    assert pair["files"]["runs/teachers/resnet14/model.pt"] == sha256_file(dvc_repo / "runs/teachers/resnet14/model.pt")
    timing = json.loads((dvc_repo / ".r2kd/timing/students/resnet14-resnet8/s0/r2kd-default/timing.json").read_text())
    assert timing["wall_seconds"] > 0  # wall-clock lives outside every output
    log = (dvc_repo / STUDENT / "log.csv").read_text().splitlines()
    assert log[0].split(",")[:1] == ["epoch"] and len(log) == 3
    assert {"train_value", "train_rank", "train_value_aug", "train_rank_aug"} <= set(log[0].split(","))
    assert not any(col.endswith("_aug_aug") for col in log[0].split(","))
    md = (dvc_repo / "reports/summary.md").read_text()
    assert "mean ± sample std" in md and "| resnet14-resnet8 | r2kd |" in md
    curves = (dvc_repo / "reports/curves.csv").read_text().splitlines()
    # per (pair, method, augment) and epoch: mean, min, max over the n seeds, integer epochs
    assert curves[0] == "epoch,mean,min,max,n,method,series"
    assert any(line.endswith(",2,r2kd,resnet14-resnet8 r2kd (default)") for line in curves)
    assert all(line.split(",")[0].isdigit() for line in curves[1:])
    headline = json.loads((dvc_repo / "reports/metrics.json").read_text())
    assert {"best", "last"} <= set(headline["resnet14-resnet8/r2kd-default"])
    import torch

    blob = torch.load(dvc_repo / "runs/students/resnet14-resnet8/s0/ce-default/model.pt", weights_only=True)
    assert blob["arch"]["name"] == "resnet8"


def test_shared_teacher_is_trained_once(both_runs):
    _, _, dvc_log, smk_log = both_runs
    assert dvc_log.stdout.count("Running stage 'train_teacher@resnet14'") == 1
    assert len(re.findall(r"^(?:local)?rule train_teacher:", smk_log.stdout + smk_log.stderr, re.M)) == 1
    assert dvc_log.stdout.index("Running stage 'check'") < dvc_log.stdout.index("Running stage 'prepare'")


def test_unchanged_rerun_does_nothing(both_runs):
    dvc_repo, smk_repo, *_ = both_runs
    assert "Data and pipelines are up to date" in run(["dvc", "repro"], dvc_repo).stdout
    smk = run(["snakemake", "--cores", "2"], smk_repo)
    assert "Nothing to be done" in smk.stdout + smk.stderr


def test_forced_identical_rerun_leaves_downstream_up_to_date(both_runs):
    """Wall-clock times live outside the outputs, so a bit-identical rerun changes no hash."""
    dvc_repo, *_ = both_runs
    before = sha256_file(dvc_repo / STUDENT / "metrics.json")
    run(["dvc", "repro", "-f", "-s", "distill@resnet14-resnet8-r2kd-default-0"], dvc_repo)
    assert sha256_file(dvc_repo / STUDENT / "metrics.json") == before
    assert "Data and pipelines are up to date" in run(["dvc", "status"], dvc_repo).stdout


def test_a_rerun_export_changes_no_tracked_hash(both_runs):
    """Its wall-clock numbers live in .r2kd/timing/, outside every output: a forced rerun of export
    leaves export and report current (they used to be marked modified)."""
    dvc_repo, *_ = both_runs
    run(["dvc", "repro", "-f", "-s", "export"], dvc_repo)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], dvc_repo).stdout
    assert not (dvc_repo / "runs/export/latency.json").exists()
    assert (dvc_repo / ".r2kd/timing/export-latency.json").is_file()


def test_a_failed_rerun_loses_nothing_dvc_restores_the_last_good_result(both_runs):
    dvc_repo, *_ = both_runs
    good = {name: sha256_file(dvc_repo / STUDENT / name) for name in ("model.pt", "metrics.json", "log.csv")}
    broken = run("R2KD_PYTHON=/bin/false .venv/bin/dvc repro -f -s distill@resnet14-resnet8-r2kd-default-0",
                 dvc_repo, check=False)
    assert broken.returncode != 0
    run(["dvc", "checkout", "distill@resnet14-resnet8-r2kd-default-0"], dvc_repo)
    assert {name: sha256_file(dvc_repo / STUDENT / name) for name in good} == good


def test_exp_run_on_a_student_key_keeps_the_teacher_and_the_old_value_comes_from_the_run_cache(both_runs):
    dvc_repo, *_ = both_runs
    teacher = dvc_repo / "runs/teachers/resnet14/model.pt"
    before = sha256_file(teacher)
    run(["git", "add", "-A"], dvc_repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "baseline"], dvc_repo)
    # a key of the r2kd students only (a distill.* key runs all of them: the same, twice the time)
    log = run(["dvc", "exp", "run", "-S", "method_params.r2kd.rank=soft", "-n", "soft"], dvc_repo).stdout
    assert "Running stage 'distill@resnet14-resnet8-r2kd-default-0'" in log
    assert "Running stage 'distill@resnet14-resnet8-ce" not in log
    assert "Running stage 'train_teacher@" not in log and "Running stage 'prune@" not in log
    assert sha256_file(teacher) == before
    back = run(["dvc", "exp", "run", "-S", "method_params.r2kd.rank=hard", "-n", "hard"], dvc_repo).stdout
    assert "Running stage 'distill@" not in back, back  # restored from the run cache, not retrained
    assert "skipping run, checking out outputs" in back
    shown = json.loads(run(["dvc", "exp", "show", "--json"], dvc_repo).stdout)
    assert "soft" in json.dumps(shown) and "resnet14-resnet8/r2kd-default" in json.dumps(shown)
    run(["dvc", "exp", "apply", "hard"], dvc_repo)


def test_snakemake_reruns_only_what_a_param_touches(both_runs):
    _, smk_repo, *_ = both_runs
    original = (smk_repo / "params.yaml").read_text()
    params = original.replace("seeds:\n- 0\n", "seeds:\n- 0\n- 2\n")
    assert "- 2" in params
    (smk_repo / "params.yaml").write_text(params)
    try:
        plan = run(["snakemake", "--dry-run", "--cores", "2"], smk_repo).stdout
    finally:
        (smk_repo / "params.yaml").write_text(original)
    assert re.search(r"seed=2", plan) and not re.search(r"seed=[01]\b", plan)  # not the cohorts (seed 1) either
    assert "rule train_teacher:" not in plan and "rule prune:" not in plan


def test_snakemake_sees_a_params_change_after_dvc_made_the_files(both_runs):
    """Outputs made by DVC leave Snakemake no record of their params; the params stamps carry it."""
    import yaml

    dvc_repo, *_ = both_runs
    original = (dvc_repo / "params.yaml").read_text()
    plan = run(["snakemake", "--dry-run", "--cores", "2"], dvc_repo).stdout
    assert "rule distill:" not in plan and "rule train_teacher:" not in plan  # DVC's files are current
    changed = yaml.safe_load(original)
    changed["distill"]["lr"] = 0.03
    (dvc_repo / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    plan = run(["snakemake", "--dry-run", "--cores", "2"], dvc_repo).stdout
    assert "rule distill:" in plan and "rule train_teacher:" not in plan
    (dvc_repo / "params.yaml").write_text(original)


def _record_of(out: str) -> str | None:
    """The file of a stage output that records the params it was made with (r2kd/recorded.py)."""
    if out == str(paths.EXPORT):
        return str(paths.EXPORT_RECORD)
    if Path(out).parent == paths.RUNS / "pairs" and not out.endswith(".json"):  # pair_pruned: the pins
        return f"{out}/record.json"
    if re.fullmatch(r"runs/students/[^/]+/s\d+", out):  # a cohort: its (pair, seed)'s folder
        return f"{out}/cohort.json"
    if out.endswith(("provenance.json", "meta.json", "eval.json", "summary.json")) or out.startswith("runs/pairs/"):
        return out
    return None


def test_every_result_records_the_params_its_stage_reruns_on(both_runs):
    """Every stage's result records the values of every params.yaml key of its stage in dvc.yaml,
    as validated: what Snakemake asks a result (r2kd/recorded.py) has an answer."""
    from r2kd.config import section
    from dvc_stages import load_stages
    from r2kd.recorded import made_with

    dvc_repo = both_runs[0]
    params = load_params(dvc_repo / "params.yaml")
    stages = [stage for stage in load_stages(dvc_repo) if stage.group != "check"]
    for stage in stages:
        records = {record for out in stage.outs if (record := _record_of(out))}
        assert len(records) == 1, stage.name
        values = {key: section(params, key) for key in stage.params}
        assert made_with(dvc_repo / records.pop(), values) is True, stage.name
    # prepare, teacher, prune, 2 pairs, their pins, 4 students (seed 0), 2 cohorts (seed 1), ...
    assert len(stages) == 1 + 1 + 1 + 2 + 2 + 4 + 2 + 1 + 1 + 1 + 1
