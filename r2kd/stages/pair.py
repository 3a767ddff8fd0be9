"""Stage `pair <id>`: pin the exact teacher file a pair's students learn from.

DVC cannot look a pair's teacher up from the pair id inside a matrix, so the student stages depend on
this small file (the teacher file and its SHA-256) instead: a new teacher reruns the students, and a
student never trains from a teacher other than the one recorded. The pruned teacher is pinned per
method by stage `pair_pruned`.
"""

from __future__ import annotations

from pathlib import Path

from r2kd import paths
from r2kd.config import Params
from r2kd.errors import CheckpointError, ConfigError
from r2kd.files import read_json, sha256_file, write_json
from r2kd.recorded import params_record
from r2kd.stages.record import input_hashes


def run(params: Params, pair: str) -> None:
    check_pair(params, pair)
    teacher = params.pairs[pair].teacher
    warn_if_teacher_smaller(teacher, params.pairs[pair].student)
    write_json(paths.pair_file(pair), {"teacher": teacher, "student": params.pairs[pair].student,
                                       "files": input_hashes([paths.teacher_dir(teacher) / "model.pt"]),
                                       "params": params_record(params, "pair", pair=pair)})


def check_pair(params: Params, pair: str) -> None:
    if pair not in params.pairs:
        raise ConfigError(f"pair: {pair!r} is not a key of `pairs` in params.yaml ({sorted(params.pairs)})")


def read_pair(pair: str, teacher: str, *, verify: tuple[str, ...] = (), pin_method: str | None = None
              ) -> tuple[Path, Path]:
    """The teacher and pruned-teacher files of ``pair``; ``verify`` names ("teacher", "pruned") to
    hash-check: the teacher against the pair file, the pruned teacher against the pin of
    ``pin_method`` (a method that runs it) in runs/pairs/<pair>/."""
    record = read_json(paths.pair_file(pair))
    teacher_file, pruned_file = paths.teacher_dir(teacher) / "model.pt", paths.pruned_dir(teacher) / "model.pt"
    if record.get("teacher") != teacher:
        raise CheckpointError(f"{paths.pair_file(pair)} names teacher {record.get('teacher')!r}, params.yaml {teacher!r}; "
                              f"rerun stage pair@{pair}")
    pins = {teacher_file: (record, f"pair@{pair}")} if "teacher" in verify else {}
    if "pruned" in verify:
        pins[pruned_file] = (read_json(paths.method_pin(pair, pin_method or "")).get("pruned") or {},
                             f"pair_pruned@{pair}")
    for path, (pin, stage) in pins.items():
        if not path.is_file():
            raise CheckpointError(f"{path} is missing; rerun the pipeline (`dvc repro` or `snakemake`) to rebuild it")
        expected = pin.get("files", {}).get(str(path))
        if sha256_file(path) != expected:
            raise CheckpointError(f"{path} is not the file pair {pair} was built with (SHA-256 differs); "
                                  f"rerun the pipeline so stage {stage} and its students see the new teacher")
    return teacher_file, pruned_file


def warn_if_teacher_smaller(teacher: str, student: str) -> None:
    import warnings

    from r2kd import models

    sizes = {arch: models.count_parameters(models.create(arch, 100)) for arch in (teacher, student)}
    if sizes[teacher] < sizes[student]:
        warnings.warn(f"pairs: teacher {teacher} ({sizes[teacher]:,} params) is smaller than its student "
                      f"{student} ({sizes[student]:,}); allowed, but unusual")
