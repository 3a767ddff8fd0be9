"""End to end, continued (tests/test_pipeline.py builds nothing of its own either: both start from
the session's built checkouts, conftest.built_checkouts): what `make run` prints and leaves, the
README's commands, and the changes (a params edit, DVC runs in a Snakemake-built checkout,
a cohort seed made a seed of its own) after which each tool reruns exactly what the change touches.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import copy_repo, make_repo, run
from r2kd.config import load_params
from r2kd.files import sha256_file
from r2kd.runs import student_runs

pytestmark = pytest.mark.slow

STUDENT = "runs/students/resnet14-resnet8/s0/r2kd-default"


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory, built_checkouts):
    """This module's own copies of the session's two built checkouts (its tests change them)."""
    base = tmp_path_factory.mktemp("reruns")
    dvc_repo, smk_repo, dvc_log, smk_log = built_checkouts
    return copy_repo(dvc_repo, base / "dvc"), copy_repo(smk_repo, base / "smk"), dvc_log, smk_log


def test_a_cohort_seed_moved_to_seeds_gives_each_run_the_same_bytes(both_runs, tmp_path):
    """cohort_seeds end to end: the built checkouts trained each pair's seed-1 runs as one
    distill_cohort stage (both tools; the agreement tests compare every file they made). Moved to
    `seeds`, the runs are distill stages of their own, and DVC trains each alone: same bytes."""
    import yaml

    dvc_repo = both_runs[0]
    repo = copy_repo(dvc_repo, tmp_path / "alone")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert (params["seeds"], params["cohort_seeds"]) == ([0], [1])
    params.update(seeds=[0, 1], cohort_seeds=[])
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cohort = sorted(p.relative_to(dvc_repo) for p in (dvc_repo / "runs/students").glob("*/s1/*/*")
                    if p.name in ("model.pt", "log.csv", "metrics.json"))
    assert len(cohort) == 2 * 2 * 3  # 2 pairs x 2 methods, 3 files each
    log = run(["dvc", "repro", "--single-item", "--glob", "distill@*-1"], repo)
    assert log.stdout.count("Running stage 'distill@") == 4
    for rel in cohort:
        assert sha256_file(repo / rel) == sha256_file(dvc_repo / rel), rel
    provenance = "runs/students/resnet14-resnet8/s1/r2kd-default/provenance.json"
    assert json.loads((dvc_repo / provenance).read_text())["cohort"] == "distill_cohort@resnet14-resnet8-1"
    assert "cohort" not in json.loads((repo / provenance).read_text())


def _planned(root: Path) -> set[str]:
    plan = run(["snakemake", "--dry-run", "--cores", "2"], root).stdout
    return set(re.findall(r"^(?:local)?rule (\w+):", plan, flags=re.M)) - {"all"}


def test_snakemake_leaves_what_dvc_made_in_the_cheap_stages_too(both_runs, tmp_path):
    """The same for a stage DVC reran after a change of its own params (evaluate.corruption_limit:
    corrupt and evaluate), in a checkout Snakemake made: only what DVC did not redo is planned."""
    import yaml

    repo = tmp_path / "copy"
    shutil.copytree(both_runs[1], repo, symlinks=True)
    original = (both_runs[0] / "params.yaml").read_text()
    (repo / "params.yaml").write_text(original)
    assert not _planned(repo)
    changed = yaml.safe_load(original)
    changed["evaluate"]["corruption_limit"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    assert _planned(repo) == {"corrupt", "evaluate", "report"}
    for stage in ("check", "corrupt", "evaluate"):
        run(["dvc", "repro", "--single-item", stage], repo)
    assert _planned(repo) == {"report"}  # DVC has not redone it
    (repo / "params.yaml").write_text(original)
    assert _planned(repo) == {"corrupt", "evaluate", "report"}


def _planned_students(root: Path) -> set[tuple[str, str, str]]:
    """The (pair, method, seed) of each run `snakemake -n` would train: a cohort's job trains all its methods."""
    plan = run(["snakemake", "--dry-run", "--cores", "2"], root).stdout
    methods = load_params(root / "params.yaml").methods
    planned = set()
    for body in re.split(r"^(?:local)?rule ", plan, flags=re.M)[1:]:
        if body.startswith(("distill:", "distill_cohort:")):
            wildcards = dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"wildcards: (.*)", body).group(1)))
            planned |= {(wildcards["pair"], m, wildcards["seed"]) for m in ([wildcards.get("method")] if
                                                                            "method" in wildcards else methods)}
    return planned


@pytest.mark.parametrize("first", ["dvc", "snakemake"])
def test_snakemake_leaves_what_dvc_made_with_the_current_params(both_runs, tmp_path, first):
    """`dvc exp run -S`, `dvc checkout`: DVC makes outputs with params Snakemake never saw (and, in
    a checkout Snakemake ran first, its records hold the values of its own runs). Each result's
    provenance.json says which, so Snakemake reruns exactly the results made with other values
    than params.yaml's, whichever tool made them and whether or not its stamp changed."""
    import yaml

    repo = tmp_path / "copy"
    shutil.copytree(both_runs[0] if first == "dvc" else both_runs[1], repo, symlinks=True)
    original = (both_runs[0] / "params.yaml").read_text()  # both tools' runs were made with it
    (repo / "params.yaml").write_text(original)
    everyone = {(run_.pair, run_.method, str(run_.seed)) for run_ in student_runs(load_params(repo / "params.yaml"))}
    assert len(everyone) == 8 and not _planned_students(repo)
    changed = yaml.safe_load(original)
    changed["distill"]["lr"] = 0.03
    (repo / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    # what `dvc exp run -S distill.lr=0.03` runs for one student (the others stay as they were)
    run(["dvc", "repro", "--single-item", "check"], repo)
    run(["dvc", "repro", "--single-item", "distill@resnet14-resnet8-ce-default-0"], repo)
    redone = ("resnet14-resnet8", "ce", "0")
    assert _planned_students(repo) == everyone - {redone}
    (repo / "params.yaml").write_text(original)
    assert _planned_students(repo) == {redone}  # its stamp says the original values; its record does not


def test_make_run_builds_everything_and_reruns_what_a_change_touches(both_runs, tmp_path):
    """`make run` on a fresh clone (the session's DVC checkout was built by it: DVC's check stage,
    then `dvc repro`, then the results table) records every stage in dvc.lock, so DVC finds nothing to
    do afterwards and `dvc exp run` goes on from there (test_pipeline.py compares its files with
    Snakemake's, byte for byte). A params change reruns what it touches."""
    import yaml

    repo, built = copy_repo(both_runs[0], tmp_path / "make"), both_runs[2]
    assert "Running stage 'check'" in built.stdout  # params validated before any compute
    assert "student test top-1" in built.stdout
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo).stdout
    make_run = ["make", "-o", ".venv/.r2kd-installed", "run"]
    assert "Data and pipelines are up to date" in run(make_run, repo).stdout
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["method_params"]["r2kd"]["rank"] = "soft"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = run(make_run, repo).stdout
    assert "Running stage 'distill@" in changed and "Running stage 'train_teacher@" not in changed
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo).stdout
    # the students DVC made with the new value are current for Snakemake too (r2kd/recorded.py);
    # what DVC's records alone vouch for (evaluate, export, report) it has no record of, so may redo
    plan = run(["snakemake", "--dry-run", "--cores", "2"], repo).stdout
    assert "rule distill:" not in plan and "rule train_teacher:" not in plan


README_COMMANDS = [  # verbatim from README.md; the test fails if the README drifts from them
    ".venv/bin/r2kd check",
    ".venv/bin/dvc exp show --only-changed",
    ".venv/bin/dvc metrics diff",
    ".venv/bin/dvc plots diff",
    ".venv/bin/snakemake -n",
    ".venv/bin/snakemake --lint",
]
README_SNAKEMAKE_RUNS = [  # the same, as dry runs (what they would run is checked)
    (".venv/bin/snakemake --cores 2 --forcerun distill", "rule distill:"),
    (".venv/bin/snakemake --cores 2 --until pair", "rule pair:"),
    (".venv/bin/snakemake --cores 2 runs/students/wrn_16_2-resnet8/s0/kd-default/model.pt", "rule distill:"),
]


def test_readme_commands_work_as_written_without_an_activated_venv(both_runs, tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for command in README_COMMANDS + [c for c, _ in README_SNAKEMAKE_RUNS]:
        assert command in readme, f"README no longer shows {command!r}"
    dvc_repo, smk_repo, *_ = both_runs
    for command in README_COMMANDS:
        result = run(command, dvc_repo, check=False)
        assert result.returncode == 0, f"{command}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    fresh = make_repo(tmp_path / "fresh")  # nothing built yet: the dry runs show what they would run
    for command, expected in README_SNAKEMAKE_RUNS:
        command = command.replace("wrn_16_2-resnet8", "resnet14-resnet8")  # the tiny repo's pair
        result = run(command + " -n", fresh)
        assert expected in result.stdout, command
    assert "rule distill:" not in run(".venv/bin/snakemake --cores 2 --until pair -n", fresh).stdout
    run(".venv/bin/snakemake --report report.html", smk_repo)
    html = (smk_repo / "report.html").read_text(errors="replace")
    assert "accuracy_per_epoch.png" in html and "summary.csv" in html



def test_a_prune_param_change_retrains_only_the_students_that_run_the_pruned_teacher(both_runs, tmp_path):
    """`dvc exp run -S prune.ratio=...` used to retrain every student; the ce students came out
    byte-identical. Now both tools plan, and DVC runs, exactly the students of a method that runs the
    pruned teacher (r2kd: both pairs share the pruned resnet14), and the others' results stay as they were."""
    import yaml

    repo = copy_repo(both_runs[0], tmp_path / "repo")
    ce = repo / "runs/students/resnet14-resnet8/s0/ce-default/model.pt"
    before = sha256_file(ce)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["prune"]["ratio"] = 0.25
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    pairs = ("resnet14-resnet8", "resnet14-wrn_16_1")
    # seed 0: the r2kd runs alone; seed 1: each pair's cohort, which holds an r2kd run
    assert _planned_students(repo) == {(pair, "r2kd", "0") for pair in pairs} | {
        (pair, method, "1") for pair in pairs for method in ("ce", "r2kd")}
    log = run(["dvc", "repro"], repo).stdout
    ran = set(re.findall(r"Running stage '(distill[^']+)'", log))
    assert ran == {f"distill@{pair}-r2kd-default-0" for pair in pairs} | {
        f"distill_cohort@{pair}-1" for pair in pairs}, log[-3000:]
    assert "Running stage 'prune@resnet14'" in log and "Running stage 'pair@" not in log
    assert sha256_file(ce) == before
    pin = json.loads((repo / "runs/pairs/resnet14-resnet8/r2kd.json").read_text())
    assert pin["pruned"]["files"]["runs/pruned/resnet14/model.pt"] == sha256_file(repo / "runs/pruned/resnet14/model.pt")
    assert json.loads((repo / "runs/pairs/resnet14-resnet8/ce.json").read_text())["pruned"] is None
