"""`dvc queue` as the README says: DVC's queue workers start `dvc` by name, so the README puts
.venv/bin on PATH for `dvc queue start`. A queued experiment whose params fail `check` runs and
fails in seconds: the worker started. (Without .venv/bin on PATH it stays queued: no worker.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import make_repo, run

pytestmark = pytest.mark.slow


START = "PATH=$PWD/.venv/bin:$PATH .venv/bin/dvc queue start"


def test_queue_start_as_the_readme_writes_it_runs_the_queued_experiment(tmp_path):
    assert START in (Path(__file__).resolve().parents[1] / "README.md").read_text()
    repo = make_repo(tmp_path / "repo")
    run(["dvc", "exp", "run", "--queue", "-S", "distill.lr=-1", "-n", "bad"], repo)
    run(START, repo)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            status = run(["dvc", "queue", "status"], repo).stdout
            if "Failed" in status:
                break
            time.sleep(2)
        assert "Failed" in status, status  # it ran: `check` refused lr=-1
        assert "distill.lr" in run(["dvc", "queue", "logs", "bad"], repo, check=False).stdout
    finally:
        run(["dvc", "queue", "stop", "--kill"], repo, check=False)
