"""Results travel the DVC way (README "Share results"): `dvc push` to the default remote (a folder
beside the checkout), a fresh clone, `dvc pull`, and `dvc repro` has nothing to do; experiments go
with `dvc exp push` / `dvc exp pull`; raw data files are tracked with `dvc add`."""

from __future__ import annotations

import os

import pytest

from conftest import make_repo, run
from r2kd.files import sha256_file

pytestmark = pytest.mark.slow

GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]


def test_push_clone_pull_and_nothing_to_do(tmp_path):
    origin = tmp_path / "origin.git"
    run(["git", "init", "-q", "--bare", str(origin)], tmp_path)
    repo = make_repo(tmp_path / "work" / "repo", override={  # small: what travels, not what trains
        "pairs": {"resnet14-resnet8": {"teacher": "resnet14", "student": "resnet8"}}, "methods": ["ce"],
        "seeds": [0], "cohort_seeds": [], "evaluate": {"corruptions": False}, "export": {"onnx": False}})
    raw = repo / "data/raw/own-archive.bin"
    raw.write_bytes(os.urandom(4096))
    run(["dvc", "add", "data/raw/own-archive.bin"], repo)
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run([*GIT, "commit", "-qm", "results"], repo)
    run(["git", "remote", "add", "origin", str(origin)], repo)
    run(["git", "push", "-q", "origin", "HEAD:main"], repo)
    run(["dvc", "push"], repo)
    assert (tmp_path / "work" / "r2kd-storage").is_dir()  # the default remote: beside the checkout

    clone = tmp_path / "work" / "clone"
    run(["git", "clone", "-q", "-b", "main", str(origin), str(clone)], tmp_path)
    (clone / ".venv").symlink_to((repo / ".venv").resolve(), target_is_directory=True)
    run(["dvc", "pull"], clone)
    assert sha256_file(clone / "data/raw/own-archive.bin") == sha256_file(raw)
    model = "runs/students/resnet14-resnet8/s0/ce-default/model.pt"
    assert sha256_file(clone / model) == sha256_file(repo / model)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], clone).stdout
    assert "Data and pipelines are up to date" in run(["dvc", "repro"], clone).stdout

    run(["dvc", "exp", "run", "-S", "distill.lr=0.02", "-n", "lr002"], repo)
    made = sha256_file(repo / model)
    run(["dvc", "exp", "push", "origin", "lr002"], repo)
    run(["dvc", "exp", "pull", "origin", "lr002"], clone)
    run(["dvc", "exp", "apply", "lr002"], clone)
    assert sha256_file(clone / model) == made
    assert "Data and pipelines are up to date" in run(["dvc", "status"], clone).stdout
