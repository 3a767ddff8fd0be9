"""Where every artefact lives. dvc.yaml declares the same paths; tests/test_dag.py checks both agree."""

from __future__ import annotations

from pathlib import Path

PREPARED = Path("data/prepared")
RUNS = Path("runs")
REPORTS = Path("reports")
# Resume state lives outside every declared output: DVC deletes outputs before rerunning a stage,
# and a checkpoint there would be lost exactly when it is needed.
STATE = Path(".r2kd/state")


def teacher_dir(arch: str) -> Path:
    return RUNS / "teachers" / arch


def pruned_dir(arch: str) -> Path:
    return RUNS / "pruned" / arch


def student_dir(teacher: str, student: str, method: str, augment: str, seed: int) -> Path:
    return RUNS / "students" / f"{teacher}-{student}" / f"{method}-{augment}" / f"s{seed}"


def state_file(run_dir: Path) -> Path:
    """Resume checkpoint of the run writing to ``run_dir`` (unique per run: no two jobs share one)."""
    return STATE / run_dir.relative_to(RUNS) / "resume.pt"


def producer(path: Path) -> str | None:
    """The command (and DVC stage) that writes ``path``: the way out when an input is missing."""
    parts = Path(path).parts
    if Path(path).parent == PREPARED:
        return "`r2kd prepare` (DVC stage prepare)"
    if len(parts) >= 3 and parts[:2] == ("runs", "teachers"):
        return f"`r2kd train-teacher {parts[2]}` (DVC stage train_teacher@{parts[2]})"
    if len(parts) >= 3 and parts[:2] == ("runs", "pruned"):
        return f"`r2kd prune {parts[2]}` (DVC stage prune@{parts[2]})"
    return None
