"""A checkout is run by one tool at a time, a stage by one process at a time, and resume state
never outlives a code change."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import env, make_repo, run, tool
from r2kd import paths
from r2kd.errors import UserError
from r2kd.lock import check_other_tool, stage_lock


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    return tmp_path


def test_a_stage_runs_once_at_a_time_and_the_second_is_told_who_holds_it(checkout):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time, sys; sys.path.insert(0, sys.argv[1]); from r2kd.lock import stage_lock\n"
        "with stage_lock('distill@p-kd-none-0'):\n    print('held', flush=True); time.sleep(30)"),
        str(Path(__file__).resolve().parents[1])], cwd=checkout, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"distill@p-kd-none-0 is already running.*pid {holder.pid}"):
            with stage_lock("distill@p-kd-none-0"):
                pass
        with stage_lock("distill@p-kd-none-1"):  # another run is free to go
            pass
    finally:
        holder.kill()
        holder.wait()
    with stage_lock("distill@p-kd-none-0"):  # released with its process
        pass


def test_a_running_dvc_in_the_checkout_stops_a_stage_started_by_another_tool(checkout):
    (checkout / ".dvc/tmp").mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        table = {"write": {"runs/x": {"pid": sleeper.pid, "cmd": "dvc repro"}}, "read": {}}
        (checkout / ".dvc/tmp/rwlock").write_text(json.dumps(table))
        with pytest.raises(UserError, match=rf"DVC is running in this checkout \(pid {sleeper.pid}: dvc repro\)"):
            check_other_tool()
    finally:
        sleeper.kill()
        sleeper.wait()
    check_other_tool()  # a dead DVC process does not count
    table = {"write": {"runs/x": {"pid": os.getpid(), "cmd": "dvc repro"}}, "read": {}}
    (checkout / ".dvc/tmp/rwlock").write_text(json.dumps(table))
    check_other_tool()  # nor does the DVC running us


def test_a_running_snakemake_stops_a_stage_started_by_dvc(checkout, monkeypatch):
    monkeypatch.setenv("DVC_STAGE", "distill@p-kd-none-0")
    check_other_tool()
    (checkout / ".snakemake/locks").mkdir(parents=True)
    (checkout / ".snakemake/locks/0.input.lock").write_text("")
    with pytest.raises(UserError, match="Snakemake holds this checkout.*snakemake --unlock"):
        check_other_tool()


def test_fingerprint_covers_the_stages_code_and_changes_with_it(tmp_path, monkeypatch):
    """Resume state is keyed on the stage's code stamp (r2kd/stagecode.py), the one both tools rerun
    the stage on: an edit of a file the stage runs changes it, an edit of another stage's file does not."""
    from r2kd.stagecode import code_files
    from r2kd.stages.record import fingerprint

    root = make_repo(tmp_path / "repo", override={}, git=False)
    monkeypatch.chdir(root)
    monkeypatch.setattr("r2kd.stages.record.CHECKOUT", root)  # the code of this copy, as if it ran there
    before = fingerprint("train_teacher", {"lr": 0.1})
    assert fingerprint("train_teacher", {"lr": 0.2}) != before
    assert fingerprint("prune", {"lr": 0.1}) != before
    assert "r2kd/train.py" in code_files("train_teacher") and "r2kd/stages/report.py" not in code_files("train_teacher")
    with open(root / "r2kd/stages/report.py", "a") as fh:
        fh.write("\n# an edit of the report's code\n")
    assert fingerprint("train_teacher", {"lr": 0.1}) == before
    with open(root / "r2kd/train.py", "a") as fh:
        fh.write("\n# an edit of the training loop\n")
    assert fingerprint("train_teacher", {"lr": 0.1}) != before


@pytest.mark.slow
def test_resume_state_from_other_code_is_not_used(tmp_path):
    """Kill a run, edit the code it runs, rerun: it starts over instead of mixing two codes' epochs."""
    repo = make_repo(tmp_path / "repo", override={"data": {"train_limit": 40, "test_limit": 8},
                                                  "train_teacher": {"epochs": 5, "milestones": [3]}})
    run(["dvc", "repro", "prepare"], repo)
    proc = subprocess.Popen([tool("dvc", repo), "repro", "train_teacher@resnet14"], cwd=repo, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    state = repo / paths.state_file(paths.teacher_dir("resnet14"))
    deadline = time.time() + 300
    while not state.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with open(repo / "r2kd/train.py", "a") as fh:
        fh.write("\n# an edit that changes nothing but the code's hash\n")
    log = run(["dvc", "repro", "train_teacher@resnet14"], repo)
    text = log.stdout + log.stderr
    assert "code changed since the interrupted run; starting over" in text, text[-3000:]
    assert "resuming after epoch" not in text
