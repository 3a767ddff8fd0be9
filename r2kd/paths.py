"""Where every artefact lives. dvc.yaml and workflow/rules declare the same paths; tests/test_dag.py
checks that both tools agree with this module."""

from __future__ import annotations

from pathlib import Path

PREPARED = Path("data/prepared")
RUNS = Path("runs")
REPORTS = Path("reports")
# Written by the `check` stage once params.yaml validates; every other stage depends on it, so
# neither tool runs a stage (or deletes its outputs) for a params.yaml that did not validate.
CHECKED = RUNS / "checked.txt"
# Resume state lives outside every declared output: DVC deletes outputs before rerunning a stage,
# and a checkpoint there would be lost exactly when it is needed.
STATE = Path(".r2kd/state")
TIMING = Path(".r2kd/timing")  # wall-clock times: not results, so outside every output
LOCK = Path(".r2kd/lock")


def teacher_dir(arch: str) -> Path:
    return RUNS / "teachers" / arch


def pruned_dir(arch: str) -> Path:
    return RUNS / "pruned" / arch


def pair_file(pair: str) -> Path:
    return RUNS / "pairs" / f"{pair}.json"


def student_dir(pair: str, method: str, augment: str, seed: int) -> Path:
    return RUNS / "students" / pair / f"{method}-{augment}" / f"s{seed}"


def state_file(run_dir: Path) -> Path:
    """Resume checkpoint of the run writing to ``run_dir`` (unique per run: no two jobs share one)."""
    return STATE / run_dir.relative_to(RUNS) / "resume.pt"


def timing_file(run_dir: Path) -> Path:
    return TIMING / run_dir.relative_to(RUNS) / "timing.json"


def producer(path: Path) -> str | None:
    """The command (and DVC stage) that writes ``path``: the way out when an input is missing."""
    parts = Path(path).parts
    if Path(path).parent == PREPARED:
        return "`r2kd prepare` (DVC stage prepare)"
    if len(parts) >= 3 and parts[:2] == ("runs", "teachers"):
        return f"`r2kd train-teacher {parts[2]}` (DVC stage train_teacher@{parts[2]})"
    if len(parts) >= 3 and parts[:2] == ("runs", "pruned"):
        return f"`r2kd prune {parts[2]}` (DVC stage prune@{parts[2]})"
    if len(parts) >= 3 and parts[:2] == ("runs", "pairs"):
        return f"`r2kd pair {Path(parts[2]).stem}` (DVC stage pair@{Path(parts[2]).stem})"
    return None
