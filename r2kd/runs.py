"""The runs params.yaml asks for: the same expansion as dvc.yaml's matrix, as Python objects."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from r2kd import paths
from r2kd.config import Params


@dataclass(frozen=True)
class StudentRun:
    teacher: str
    student: str
    method: str
    augment: str
    seed: int

    @property
    def pair(self) -> str:
        return f"{self.teacher}-{self.student}"

    @property
    def dir(self) -> Path:
        return paths.student_dir(self.teacher, self.student, self.method, self.augment, self.seed)


def student_runs(params: Params) -> list[StudentRun]:
    """In dvc.yaml's matrix order: pair, method, augment, seed."""
    return [
        StudentRun(pair.teacher, pair.student, method, augment, seed)
        for pair, method, augment, seed in itertools.product(params.pairs, params.methods, params.augments, params.seeds)
    ]
