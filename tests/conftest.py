"""Shared fixtures: a throw-away copy of the repository with tiny params, for end-to-end runs."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
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
    "pairs": {"resnet14-resnet8": {"teacher": "resnet14", "student": "resnet8"},
              "resnet14-wrn_16_1": {"teacher": "resnet14", "student": "wrn_16_1"}},
    "methods": ["ce", "r2kd"],
    "seeds": [0],
    "cohort_seeds": [1],  # each pair's seed-1 runs train as one stage (distill_cohort), in both tools
    "train_teacher": {"epochs": 2, "milestones": [1]},
    "distill": {"epochs": 2, "milestones": [1]},
    # every corruption and severity, on 2 images a class; the timings' repeats at their minimum
    "evaluate": {"corruption_limit": 2},
    "export": {"latency_runs": 5, "throughput_runs": 1},
}


def tracked_files() -> list[str]:
    generated = ("data/prepared/", "runs/", "reports/", "dvc.lock", ".r2kd/", "logs/", ".snakemake/")
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):  # a copy without .git (the GPU machine's)
        skip = (".git/", ".venv/", ".whl/", ".gl/", ".dvc/cache/", ".dvc/tmp/", ".pytest_cache/", "data/raw/",
                "data/corrupted/", "r2kd.egg-info/", "report.html")
        out = [p.relative_to(REPO).as_posix() for p in REPO.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        out = [line for line in out if not line.startswith(skip)]
    return [line for line in out
            if line and (REPO / line).exists() and not line.startswith(generated) and not line.endswith("/.gitignore")]


def merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key not in ("teachers", "pairs", "method_params"):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def write_params(root: Path, override: dict) -> dict:
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), override)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def env() -> dict[str, str]:
    """A user's shell: the venv is NOT activated (not on PATH), as after `make env` in a new terminal.

    Tools are called by path (`.venv/bin/dvc`), exactly as the README shows; stage commands must find
    the environment themselves (workflow/scripts/r2kd).
    """
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("VIRTUAL_ENV", "PYTHONPATH", "CUDA_VISIBLE_DEVICES", "R2KD_PYTHON")}
    environment["PATH"] = os.pathsep.join(p for p in environment.get("PATH", "/usr/bin:/bin").split(os.pathsep)
                                          if Path(p).resolve() != BIN.resolve())
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


def tool(name: str, cwd: Path) -> str:
    """How to call ``name`` (dvc, snakemake, r2kd) in ``cwd``: as the README writes it (`.venv/bin/dvc`,
    from the repo root) where ``cwd``'s .venv is the environment running the tests (every make_repo
    copy links it); otherwise from that environment's own bin, never from whatever .venv the checkout
    holds (`make test VENV=<another env>` runs the tests with another environment than ./.venv)."""
    venv = Path(cwd) / ".venv"
    if venv.exists() and venv.resolve() == BIN.parent.resolve():
        return f".venv/bin/{name}"
    return str(BIN / name)


def run(cmd: list[str] | str, cwd: Path, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    if isinstance(cmd, list) and cmd[0] in ("dvc", "snakemake", "r2kd"):
        cmd = [tool(cmd[0], cwd), *cmd[1:]]
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
    # what `make env` leaves in a checkout: the environment at .venv (here a link to the one running
    # the tests); nothing else, so the stage commands must find it on their own
    (dest / ".venv").symlink_to(BIN.parent, target_is_directory=True)
    if git:
        run(["git", "init", "-q"], dest)
        run(["git", "add", "-A"], dest)
        run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], dest)
    return dest


@pytest.fixture(scope="session")
def built_checkouts(tmp_path_factory):
    """The tiny DAG built once per test run, by `make run` (DVC's check stage, then `dvc repro`, then
    the results table: the README's command) and by `snakemake --cores 2`: (dvc_repo, smk_repo, dvc_log,
    smk_log). `make -o` keeps make from remaking the environment running the tests. Tests that change
    a checkout work on a copy (copy_repo).

    Under pytest-xdist each worker has its own session: the first worker to ask builds, under a lock
    in the run's shared temporary folder, and the others wait for it and read the same build."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    base, done = shared / "built", shared / "built.json"
    with open(shared / "built.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(base, ignore_errors=True)  # what a worker that failed half-way left
            dvc_repo, smk_repo = make_repo(base / "dvc"), make_repo(base / "smk")
            with ThreadPoolExecutor(2) as both:  # side by side: DVC runs one stage at a time
                commands = [["make", "-o", ".venv/.r2kd-installed", "run"], ["snakemake", "--cores", "2"]]
                logs = list(both.map(run, commands, [dvc_repo, smk_repo]))
            done.write_text(json.dumps([[log.args, log.stdout, log.stderr] for log in logs]))
    dvc_log, smk_log = (subprocess.CompletedProcess(args, 0, out, err)
                        for args, out, err in json.loads(done.read_text()))
    return base / "dvc", base / "smk", dvc_log, smk_log


def copy_repo(source: Path, dest: Path) -> Path:
    """A copy of a built checkout, dates and links kept (what the tools compare)."""
    shutil.copytree(source, dest, symlinks=True)
    return dest


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def pytest_collection_modifyitems(items):
    """The end-to-end files first: `make test` hands whole files to its workers in this order, so the
    long ones start at once and the short ones fill the gaps, and the workers finish together."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: a file's own order is kept


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cuda_deterministic():
    """CUDA's deterministic kernels, as runtime.deterministic (the default) sets them: without them
    two identical CUDA runs differ (atomics in convolution backward), so no comparison means much."""
    import torch

    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]
