"""Stage `pair <id>`: pin the exact teacher files a pair's students learn from.

DVC cannot look a pair's teacher up from the pair id inside a matrix, so the student stages depend on
this small file instead: it names the teacher and pruned-teacher files and their SHA-256, so a new
teacher reruns the students (through DVC's hash of this file, and Snakemake's mtime of it) and a
student never trains from a teacher other than the one recorded.
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
    if pair not in params.pairs:
        raise ConfigError(f"pair: {pair!r} is not a key of `pairs` in params.yaml ({sorted(params.pairs)})")
    teacher = params.pairs[pair].teacher
    warn_if_teacher_smaller(teacher, params.pairs[pair].student)
    files = [paths.teacher_dir(teacher) / "model.pt", paths.pruned_dir(teacher) / "model.pt"]
    write_json(paths.pair_file(pair), {"teacher": teacher, "student": params.pairs[pair].student,
                                       "files": input_hashes(files),
                                       "params": params_record(params, "pair", pair=pair)})


def read_pair(pair: str, teacher: str, *, verify: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """The teacher and pruned-teacher files of ``pair``; ``verify`` names ("teacher", "pruned") to hash-check."""
    record = read_json(paths.pair_file(pair))
    teacher_file, pruned_file = paths.teacher_dir(teacher) / "model.pt", paths.pruned_dir(teacher) / "model.pt"
    if record.get("teacher") != teacher:
        raise CheckpointError(f"{paths.pair_file(pair)} names teacher {record.get('teacher')!r}, params.yaml {teacher!r}; "
                              f"rerun stage pair@{pair}")
    for role, path in (("teacher", teacher_file), ("pruned", pruned_file)):
        if role not in verify:
            continue
        if not path.is_file():
            raise CheckpointError(f"{path} is missing; rerun the pipeline (`dvc repro` or `snakemake`) to rebuild it")
        expected = record.get("files", {}).get(str(path))
        if sha256_file(path) != expected:
            raise CheckpointError(f"{path} is not the file pair {pair} was built with (SHA-256 differs); "
                                  f"rerun the pipeline so stage pair@{pair} and its students see the new teacher")
    return teacher_file, pruned_file


def warn_if_teacher_smaller(teacher: str, student: str) -> None:
    import warnings

    from r2kd import models

    sizes = {arch: models.count_parameters(models.create(arch, 100)) for arch in (teacher, student)}
    if sizes[teacher] < sizes[student]:
        warnings.warn(f"pairs: teacher {teacher} ({sizes[teacher]:,} params) is smaller than its student "
                      f"{student} ({sizes[student]:,}); allowed, but unusual")
