"""Presets ship inside the package (r2kd/presets/*.yaml, package data): `r2kd preset NAME` works
outside a checkout and from a wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from r2kd import presets

REPO = Path(__file__).resolve().parents[1]
FILES = sorted((REPO / "r2kd/presets").glob("*.yaml"))


def r2kd(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "r2kd", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_names_are_the_shipped_files():
    assert presets.names() == [p.stem for p in FILES] and {"cifar100", "imagenet", "tiny_imagenet"} <= set(presets.names())
    assert presets.find("cifar100").read_text() == (REPO / "r2kd/presets/cifar100.yaml").read_text()
    assert presets.find("imagenet22k") is None and presets.find("../params") is None


def test_preset_works_outside_a_checkout(tmp_path):
    out = r2kd(tmp_path, "preset", "tiny_imagenet")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "params.yaml").read_text() == (REPO / "r2kd/presets/tiny_imagenet.yaml").read_text()
    bad = r2kd(tmp_path, "preset", "imagenet22k")
    assert bad.returncode == 2 and str(presets.names()) in bad.stderr, bad.stderr


@pytest.mark.slow
def test_wheel_holds_the_presets(tmp_path):
    src = tmp_path / "src"
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name if src.exists() else (src.mkdir() or src / name))
    shutil.copytree(REPO / "r2kd", src / "r2kd", ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
                          "-w", str(tmp_path / "whl")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = (tmp_path / "whl").glob("r2kd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"r2kd/presets/{p.name}" for p in FILES} | {"r2kd/presets/__init__.py"} <= names
