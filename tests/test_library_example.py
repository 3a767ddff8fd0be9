"""docs/library.md's example runs as written (the R2KD loss, its view and the pruned teacher in a
loop of one's own), with the pipeline tools (dvc, snakemake, onnx, ...) made unimportable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from test_dependencies import BLOCKER

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs/library.md"

CHECK = textwrap.dedent("""
    import math
    from r2kd.pruning.methods import nonzero_weight_fraction
    assert set(terms) == {"ce", "value", "rank", "value_aug", "rank_aug"}, terms
    assert all(math.isfinite(v.item()) for v in terms.values())
    assert loss.requires_grad
    assert not any(p.requires_grad for p in [*teacher.parameters(), *pruned.parameters()])
    assert 0.85 < nonzero_weight_fraction(pruned) < 0.95 < nonzero_weight_fraction(teacher)
    assert not _pipeline_modules_loaded(), _pipeline_modules_loaded()
    print("example ok")
""")


def example_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 2, "docs/library.md: the loop and the one-call objective"
    return "\n".join(blocks)


def test_library_example_runs_without_pipeline_tools():
    code = BLOCKER + example_code() + CHECK
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: seconds, not a minute, on a busy small CPU
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.splitlines()[-1] == "example ok"
    epochs = [line.split(" ", 1)[0] for line in out.stdout.splitlines()[:-1]]
    assert epochs == ["1", "2"], out.stdout
