"""The source files each kind of stage runs, and a stamp of their contents.

Each stage's code is its import closure (tests/test_dag.py checks these lists cover it). Both tools
rerun a stage when one of its files changes, and only then, through ONE small stamp per stage kind:
a JSON map of file -> SHA-256, whose content changes only when a digest does.

- DVC: the `check` stage, which depends on the whole `r2kd/` tree, writes `runs/code/<stage>.json`;
  each stage depends on its own stamp. Listing 40 source files per stage instead made dvc.lock
  ~1,000 entries for the default matrix, and DVC re-parses dvc.lock (ruamel, round trip) on every
  no-op status check and twice per stage it runs: most of a no-op `dvc repro`'s time.
- Snakemake: the Snakefile writes `.r2kd/code/<stage>.json` at parse time (a job with one code input
  instead of forty keeps its DAG cheap). A file of its own, not DVC's: DVC's `check` rewrites its
  stamps on every params.yaml change (DVC deletes a stage's outputs before running it), and the
  newer date would make Snakemake rerun every job after any `dvc exp run`.

A student's code is the share every method runs (the `distill` stamp) plus its method's own files
(r2kd/methods/<m>.py, r2kd/method_params/<m>.py): DVC depends on those two files directly, so
`dvc status` names the students of an edited method before `check` reruns; Snakemake reads them
through a second stamp, `.r2kd/code/method-<m>.json`.

An edit in place reruns the stage; a touched file, bytecode or an editor's swap file does not.
Standard library only: Snakemake's parse and `r2kd check` import this without torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from r2kd.pipeline import STAGES, code_entries

# Each stage's code, from the pipeline table (r2kd/pipeline.py); directories stand for every .py
# file under them. For distill, the share of every method: a student's code adds its method's own
# files (code stamp ``distill-<method>``).
STAGE_CODE: dict[str, tuple[str, ...]] = {name: stage.code for name, stage in STAGES.items()}


def code_files(stage: str, root: str | Path = ".") -> list[str]:
    """The source files of code stamp ``stage`` (r2kd.pipeline.code_entries), directories expanded
    to their .py files, repository-relative."""
    root = Path(root)
    files: set[str] = set()
    for entry in code_entries(stage):
        path = root / entry
        if path.is_dir():
            files.update(p.relative_to(root).as_posix() for p in path.rglob("*.py"))
        else:
            files.add(entry)
    return sorted(files)


def code_digests(stage: str, root: str | Path = ".") -> dict[str, str]:
    return {f: hashlib.sha256((Path(root) / f).read_bytes()).hexdigest() for f in code_files(stage, root)}


def stamp_text(stage: str, root: str | Path = ".") -> str:
    return json.dumps(code_digests(stage, root), indent=0, sort_keys=True)
