"""docs/dag.md's ways of seeing the pipeline's graph stay readable at 120 columns on the default
params.yaml (plain `dvc dag` is thousands of columns wide)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from r2kd.config import load_params

REPO = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"


def views() -> list[list[str]]:
    params = load_params(REPO / "params.yaml")
    teacher, pair = next(iter(params.teachers)), next(iter(params.pairs))
    return [["--mermaid"], [f"prune@{teacher}"], [f"pair@{pair}"]]


@pytest.mark.skipif(not DVC.exists(), reason="needs dvc (the pipeline extra)")
@pytest.mark.parametrize("args", views(), ids=lambda a: a[0])
def test_documented_dag_views_fit_120_columns(args):
    out = subprocess.run([str(DVC), "dag", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) > 5 and max(map(len, lines)) <= 120
    assert f"dvc dag {args[0]}" in (REPO / "docs/dag.md").read_text()
