"""The source files each kind of stage runs, and a stamp of their contents (docs/architecture.md).

Both tools rerun a stage when one of its files changes, and only then, through ONE small stamp per
stage kind: a JSON map of file -> SHA-256, whose content changes only when a digest does (so a
touched file, bytecode or an editor's swap file reruns nothing). DVC's `check` stage writes
`runs/code/<stage>.json`; Snakemake writes its own `.r2kd/code/<stage>.json` at parse time (DVC's
`check` rewrites its stamps on every params.yaml change, and the newer date would make Snakemake
rerun every job after any `dvc exp run`). Listing the 40 source files per stage instead made
dvc.lock ~1,000 entries for the default matrix, which DVC re-parses on every status check. A
student's code is the `distill` stamp plus its method's own files (``method-<m>``).
Standard library only: Snakemake's parse and `r2kd check` import this without torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from r2kd.pipeline import STAGES, code_entries

# Directories stand for every .py file under them; distill's is what every method shares.
STAGE_CODE: dict[str, tuple[str, ...]] = {name: stage.code for name, stage in STAGES.items()}


def code_files(stage: str, root: str | Path = ".", methods: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The source files of code stamp ``stage`` (r2kd.pipeline.code_entries; ``methods``: the ones
    params.yaml lists), directories expanded to their .py files, repository-relative."""
    root = Path(root)
    files: set[str] = set()
    for entry in code_entries(stage, methods):
        path = root / entry
        if path.is_dir():
            files.update(p.relative_to(root).as_posix() for p in path.rglob("*.py"))
        else:
            files.add(entry)
    return sorted(files)


def code_digests(stage: str, root: str | Path = ".", methods: tuple[str, ...] | list[str] = ()) -> dict[str, str]:
    return {f: hashlib.sha256((Path(root) / f).read_bytes()).hexdigest() for f in code_files(stage, root, methods)}


def stamp_text(stage: str, root: str | Path = ".", methods: tuple[str, ...] | list[str] = ()) -> str:
    return json.dumps(code_digests(stage, root, methods), indent=0, sort_keys=True)
