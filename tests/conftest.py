"""Shared fixtures: a throw-away copy of the repository with tiny params, for end-to-end runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Small enough for seconds per stage on 2 CPU cores, big enough to exercise every code path.
TINY = {
    "data": {"train_limit": 12, "test_limit": 8},
    "teachers": {"resnet14": {"checkpoint": None, "checkpoint_sha256": None}},
    # two pairs sharing one teacher: it must be trained once and used by both
    "pairs": [{"teacher": "resnet14", "student": "resnet8"}, {"teacher": "resnet14", "student": "wrn_16_1"}],
    "methods": ["ce", "r2kd"],
    "seeds": [0, 1],
    "train_teacher": {"epochs": 2, "milestones": [1]},
    "distill": {"epochs": 2, "milestones": [1]},
}


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True)
    generated = ("data/prepared/", "runs/", "reports/", "dvc.lock", ".r2kd/")
    return [line for line in out.stdout.splitlines()
            if line and (REPO / line).exists() and not line.startswith(generated) and not line.endswith("/.gitignore")]


def merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key not in ("teachers", "method_params"):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def write_params(root: Path, override: dict) -> dict:
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), override)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def env() -> dict[str, str]:
    environment = dict(os.environ)
    environment["PATH"] = f"{BIN}{os.pathsep}{environment.get('PATH', '')}"
    environment["PYTHONUNBUFFERED"] = "1"
    environment.pop("CUDA_VISIBLE_DEVICES", None)
    return environment


def run(cmd: list[str] | str, cwd: Path, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout,
                            shell=isinstance(cmd, str))
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def make_repo(dest: Path, override: dict | None = None, git: bool = True) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for rel in tracked_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    write_params(dest, TINY if override is None else merge(TINY, override))
    if git:
        run(["git", "init", "-q"], dest)
        run(["git", "add", "-A"], dest)
        run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], dest)
    return dest


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
