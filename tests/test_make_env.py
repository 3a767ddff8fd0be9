"""`make env` and a wrong Python: a .venv made by an older (or uninstalled) interpreter is made again;
a VENV=... of the user's own stops make with one line saying how to recover. Fake interpreters only:
nothing is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def fake_python(path: Path, version: str, code: int = 0) -> Path:
    """An interpreter that answers every question with VERSION (what the Makefile asks is X.Y)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {version}\nexit {code}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def make(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VENV", "PYTHON", "MAKEFLAGS", "MAKELEVEL")}
    return subprocess.run(["make", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=60)


def installed(venv: Path) -> None:
    """The stamp of a finished `make env`, newer than the dependency spec."""
    stamp = venv / ".r2kd-installed"
    stamp.touch()
    later = time.time() + 5
    os.utime(stamp, (later, later))


def test_a_good_venv_is_left_alone(checkout):
    fake_python(checkout / ".venv/bin/python", "3.12")
    installed(checkout / ".venv")
    out = make(checkout, "-n", "env")
    assert out.returncode == 0, out.stderr
    assert "rm -rf" not in out.stdout and "pip install" not in out.stdout


@pytest.mark.parametrize("state", ["old", "broken", "missing"])
def test_our_venv_with_a_wrong_python_is_made_again(checkout, state):
    python = checkout / ".venv/bin/python"
    if state == "old":
        fake_python(python, "3.9")
    elif state == "broken":
        fake_python(python, "", code=1)
    else:  # the interpreter it links to was uninstalled
        python.parent.mkdir(parents=True)
        python.symlink_to(checkout / "gone/python3.9")
    installed(checkout / ".venv")  # an up-to-date stamp must not hide it
    out = make(checkout, "-n", "env")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "rm -rf .venv" in lines
    assert any("-m venv .venv" in line for line in lines)
    assert lines.index("rm -rf .venv") < [i for i, line in enumerate(lines) if "pip install" in line][0]


def test_recreating_with_an_old_python_stops_before_deleting(checkout):
    fake_python(checkout / ".venv/bin/python", "3.9")
    old = fake_python(checkout / "py39/python3", "", code=1)
    out = make(checkout, "env", f"PYTHON={old}")
    assert out.returncode != 0
    said = [line for line in out.stderr.splitlines() if line.startswith("r2kd:")]
    assert len(said) == 1 and "rm -rf .venv && make env PYTHON=python3.11" in said[0], out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert (checkout / ".venv/bin/python").exists()  # nothing deleted


def test_a_users_venv_with_a_wrong_python_gets_one_line(checkout, tmp_path):
    venv = tmp_path / "mine"
    fake_python(venv / "bin/python", "3.9")
    installed(venv)
    out = make(checkout, "env", f"VENV={venv}")
    assert out.returncode != 0
    said = [line for line in out.stderr.splitlines() if line.startswith("r2kd:")]
    assert said == [f"r2kd: VENV={venv} runs Python 3.9, r2kd needs Python >= 3.11: "
                    f"rm -rf {venv} && make env VENV={venv} PYTHON=python3.11"], out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert (venv / "bin/python").exists()  # never deleted
