"""No tool deletes what nobody can restore (r2kd/handoff.py, docs/reliability.md).

DVC deletes what it does not know (`dvc exp run` force-checks-out dvc.lock first; `dvc repro`
removes a stage's outputs before running it), and Snakemake deletes a job's outputs before it runs
the job. These tests run the sequences that lost results before: each ends with every result back
(or never gone) and a line saying what happened.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import env, make_repo, run
from r2kd.files import sha256_file

pytestmark = pytest.mark.slow


def results(root: Path) -> dict[str, str]:
    found = {}
    for sub in ("data/prepared", "data/corrupted", "runs", "reports"):
        for path in (root / sub).rglob("*"):
            if path.is_file() and path.name not in (".snakemake_timestamp",) and "latency" not in path.name \
                    and path.suffix != ".png":
                found[str(path.relative_to(root))] = sha256_file(path)
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory, built_checkouts):
    """One checkout built by Snakemake and one by DVC (copies of the session's), each committed to
    git as a user would."""
    base = tmp_path_factory.mktemp("handoff")
    dvc_built, smk_built, _, log = built_checkouts
    smk, dvc = copy(smk_built, base / "smk"), copy(dvc_built, base / "dvc")
    for repo in (smk, dvc):
        run(["git", "add", "-A"], repo)
        run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "results"], repo)
    return smk, dvc, log


def copy(repo: Path, dest: Path) -> Path:
    shutil.copytree(repo, dest, symlinks=True)
    return dest


def test_snakemake_records_every_job_in_dvc_lock_and_dvc_finds_nothing_to_do(built):
    smk, _, log = built
    assert "recorded 17 stage(s) Snakemake ran in dvc.lock" in log.stdout + log.stderr  # every job but `all`
    assert "Data and pipelines are up to date" in run(["dvc", "status"], smk).stdout
    assert not any((smk / ".r2kd" / "unrecorded").iterdir())


@pytest.mark.parametrize("which", ["smk", "dvc"])
def test_a_failed_exp_run_loses_nothing(built, tmp_path, which):
    """An invalid -S value: DVC's forced checkout finds every result recorded, `check` refuses the
    value and keeps its stamps (persist), and nothing else ran. An injected seed names stages DVC
    never ran: on a DVC-built checkout DVC removes the files it had checked out itself, and the check
    says so in one line; `git checkout params.yaml && dvc checkout` brings every one back."""
    repo = copy(built[0] if which == "smk" else built[1], tmp_path / which)
    before = results(repo)
    bad = run(["dvc", "exp", "run", "-S", "distill.lr=-1"], repo, check=False)
    assert bad.returncode != 0 and "distill.lr" in bad.stdout + bad.stderr
    assert results(repo) == before  # not one file gone, the check's stamps included
    run(["git", "checkout", "params.yaml"], repo)

    injected = run(["dvc", "exp", "run", "-S", 'seeds=["0; touch PWNED #"]'], repo, check=False)
    said = injected.stdout + injected.stderr
    assert injected.returncode != 0 and "seeds.0" in said
    assert not (repo / "PWNED").exists()
    gone = sorted(set(before) - set(results(repo)))
    if gone:
        assert f"{len(gone)} result(s) recorded in dvc.lock are not on disk" in said
        assert "`dvc checkout` restores them" in said
    assert not [p for p in (repo / "runs").rglob("*PWNED*")]  # no empty folder named after the value
    run(["git", "checkout", "params.yaml"], repo)
    run(["dvc", "checkout"], repo)
    assert results(repo) == before
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo).stdout


def test_dvc_repro_of_one_stage_on_a_snakemake_checkout_keeps_the_teacher(built, tmp_path):
    repo = copy(built[0], tmp_path / "smk")
    before = results(repo)
    out = run(["dvc", "repro", "-s", "train_teacher@resnet14"], repo).stdout
    assert "didn't change, skipping" in out
    assert results(repo) == before


GATE = """#!/bin/sh
# the stage command of {stage} waits for the test's go: the other tool arrives meanwhile
if [ "$3" = "{stage}" ]; then touch "{dir}/waiting"; while [ ! -f "{dir}/go" ]; do sleep 0.05; done; fi
exec "{python}" "$@"
"""


def gated(repo: Path, stage: str) -> tuple[dict[str, str], Path]:
    """An environment whose r2kd ``stage`` command blocks until the test lets it go."""
    gate = repo / ".gate"
    gate.mkdir()
    script = gate / "python"
    script.write_text(GATE.format(stage=stage, dir=gate, python=Path(os.sys.executable)))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    environment = env()
    environment["R2KD_PYTHON"] = str(script)
    return environment, gate


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def test_dvc_arriving_during_a_snakemake_run_deletes_nothing(built, tmp_path):
    repo = copy(built[0], tmp_path / "smk")
    before = results(repo)
    environment, gate = gated(repo, "report")
    snakemake = subprocess.Popen([".venv/bin/snakemake", "--cores", "2", "--forcerun", "report"], cwd=repo,
                                 env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(gate / "waiting", snakemake)
        for command in (["dvc", "exp", "run", "-S", "distill.lr=0.02"],
                        ["dvc", "repro", "-f", "-s", "distill@resnet14-resnet8-r2kd-default-0"],
                        ["dvc", "checkout", "--force"]):
            refused = run(command, repo, check=False)
            assert refused.returncode != 0 and "Unable to acquire lock" in refused.stdout + refused.stderr
        now = results(repo)
        assert {k: v for k, v in before.items() if not k.startswith("reports/")} == \
               {k: v for k, v in now.items() if not k.startswith("reports/")}  # Snakemake redoes the report
    finally:
        (gate / "go").touch()
        out, _ = snakemake.communicate(timeout=300)
    assert snakemake.returncode == 0, out
    run(["git", "checkout", "params.yaml"], repo)
    assert results(repo) == before
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo).stdout


def test_snakemake_arriving_during_a_dvc_run_is_refused_before_it_deletes(built, tmp_path):
    repo = copy(built[1], tmp_path / "dvc")
    before = results(repo)
    environment, gate = gated(repo, "report")
    dvc = subprocess.Popen([".venv/bin/dvc", "repro", "-f", "-s", "report"], cwd=repo, env=environment,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(gate / "waiting", dvc)
        refused = run(["snakemake", "--cores", "2", "--forcerun", "prepare"], repo, check=False)
        assert refused.returncode != 0
        assert "DVC is running a stage in this checkout" in refused.stdout + refused.stderr
        assert {k: v for k, v in results(repo).items() if not k.startswith("reports/")} == \
               {k: v for k, v in before.items() if not k.startswith("reports/")}
    finally:
        (gate / "go").touch()
        out, _ = dvc.communicate(timeout=300)
    assert dvc.returncode == 0, out
    assert results(repo) == before
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo).stdout


def test_a_killed_snakemake_run_is_recorded_by_the_next(built, tmp_path):
    """SIGKILL skips Snakemake's handlers: the jobs that finished stay noted, and the next run
    records them before it starts anything."""
    import signal

    repo = copy(built[0], tmp_path / "smk")
    environment, gate = gated(repo, "report")
    snakemake = subprocess.Popen([".venv/bin/snakemake", "--cores", "1", "--forcerun", "evaluate"], cwd=repo,
                                 env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 start_new_session=True)
    wait_for(gate / "waiting", snakemake)  # evaluate finished, report is running
    os.killpg(snakemake.pid, signal.SIGKILL)
    snakemake.communicate()
    assert (repo / ".r2kd" / "unrecorded" / "evaluate").is_file()
    shutil.rmtree(gate)
    run(["snakemake", "--unlock"], repo)  # what Snakemake asks for after a kill
    log = run(["snakemake", "--cores", "1", "--rerun-incomplete"], repo)
    said = log.stdout + log.stderr
    assert said.index("recorded 1 stage(s) Snakemake ran") < said.index("rule report")
    assert not any((repo / ".r2kd" / "unrecorded").iterdir())
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo).stdout


def test_snakemake_plans_what_dvc_status_says_after_dvc_restores(tmp_path):
    """DVC restores files in no particular order and without their mtimes, and a forced identical
    rerun rewrites them: Snakemake must still plan exactly what `dvc status` says. The pruned
    teacher (wrn_16_2: over 1 MB, more than Snakemake checksums) is dated last, DVC's worst order."""
    import yaml

    repo = make_repo(tmp_path / "repo", override={
        "teachers": {"wrn_16_2": {"checkpoint": None, "checkpoint_sha256": None}},
        "pairs": {"wrn_16_2-resnet8": {"teacher": "wrn_16_2", "student": "resnet8"}},
        "methods": ["r2kd"], "seeds": [0], "cohort_seeds": [], "evaluate": {"corruptions": False},
        "export": {"onnx": False}})
    pruned = repo / "runs/pruned/wrn_16_2/model.pt"
    run(["snakemake", "--cores", "2"], repo)
    assert pruned.stat().st_size > 1_000_000
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "baseline"], repo)
    run(["dvc", "exp", "run", "-S", "distill.lr=0.02", "-n", "lr002"], repo)

    def agree(touch: bool = True) -> None:
        if touch:
            os.utime(pruned, None)
        assert "Data and pipelines are up to date" in run(["dvc", "status"], repo).stdout
        plan = run(["snakemake", "-n", "--cores", "2"], repo)
        assert "Nothing to be done" in plan.stdout + plan.stderr, plan.stdout[-3000:]

    run(["dvc", "exp", "apply", "lr002"], repo)
    agree()
    run(["dvc", "checkout", "--force"], repo)
    agree()
    run(["git", "checkout", "HEAD", "--", "params.yaml", "dvc.lock"], repo)
    run(["dvc", "checkout"], repo)
    agree()
    run(["dvc", "repro", "-f", "-s", "prune@wrn_16_2"], repo)  # bit for bit the same pruned teacher
    agree(touch=False)
    # and a real change still shows in both, the same stages
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["distill"]["lr"] = 0.03
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run(["dvc", "status"], repo).stdout
    plan = run(["snakemake", "-n", "--cores", "2"], repo).stdout
    assert "distill@wrn_16_2-resnet8-r2kd-default-0" in status and "rule distill:" in plan
    assert "train_teacher@" not in status and "rule train_teacher:" not in plan


def test_a_dry_run_between_an_edit_and_its_undo_changes_nothing(built, tmp_path):
    """On a DVC-built checkout: edit a method's file, `snakemake -n` (it plans that method's
    students, as `dvc status` shows them), undo the edit: both tools have nothing to do again."""
    repo = copy(built[1], tmp_path / "dvc")
    assert "Nothing to be done" in run(["snakemake", "-n", "--cores", "1"], repo).stdout
    source = repo / "r2kd/methods/r2kd.py"
    original = source.read_text()
    source.write_text(original + "\n# an edit\n")
    assert "distill@resnet14-resnet8-r2kd-default-0" in run(["dvc", "status"], repo).stdout
    plan = run(["snakemake", "-n", "--cores", "1"], repo).stdout
    distill_outputs = [block.split("output: ", 1)[1].split("\n", 1)[0] for block in plan.split("rule distill:")[1:]]
    assert len(distill_outputs) == 2 and all("/r2kd-default/" in out for out in distill_outputs)  # 2 pairs, seed 0
    assert plan.count("rule distill_cohort:") == 2  # each pair's seed-1 cohort, which trains an r2kd run
    source.write_text(original)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo).stdout
    plan = run(["snakemake", "-n", "--cores", "1"], repo)
    assert "Nothing to be done" in plan.stdout, plan.stdout[-3000:]
