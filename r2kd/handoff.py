"""What Snakemake builds, DVC knows: so neither tool deletes a result nobody can restore.

DVC deletes what it does not know (`dvc exp run` starts with a forced checkout of dvc.lock, `dvc
repro` removes a stage's outputs before it runs it), and a result made outside DVC is in no DVC
cache. So every stage command that succeeds outside DVC leaves a note (``note_result``), and `dvc
commit` records the noted stages when the Snakemake run ends, or when the next one starts after a
kill (``record_in_dvc``); while Snakemake runs it holds DVC's repo lock, and it refuses to start while
a DVC stage command runs here. docs/reliability.md (its rows on DVC and Snakemake in one checkout)
says what holds and what does not.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Callable

import yaml

from r2kd.errors import UserError
from r2kd.files import write_text
from r2kd.lock import running_dvc
from r2kd.paths import CODE_STAMPS
from r2kd.recorded import PARAMS_ENV

NOTES = Path(".r2kd/unrecorded")  # one file per stage made outside DVC and not yet in dvc.lock
DVC_REPO_LOCK = Path(".dvc/tmp/lock")  # DVC's repo lock (zc.lockfile: an flock on this file)
PARAMS = Path("params.yaml")


def _params_digest(path: str | Path = PARAMS) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


def note_result(stage: str, params: str | Path = PARAMS) -> None:
    """After stage ``stage`` (DVC's name, e.g. "distill@p-kd-default-0") succeeded outside DVC, having
    read the params file ``params``: the note holds that file's digest (and its name), so a result
    made with Snakemake --config overrides (.r2kd/snakemake/params.yaml) never passes for one made
    with params.yaml."""
    if os.environ.get("DVC_STAGE") or not Path(".dvc").is_dir():
        return  # DVC records what it runs itself; without DVC there is nothing to tell
    try:
        write_text(NOTES / stage, f"{_params_digest(params)}\n{params}\n")
    except UserError as exc:  # the result itself is complete: say what is missing, do not fail the stage
        print(f"r2kd: warning: cannot note {stage} for dvc.lock ({exc}); run `dvc commit "
              f"{stage}` before any `dvc exp run`", file=sys.stderr)


def _dvc(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != PARAMS_ENV}  # DVC's stages read params.yaml
    return subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True, env=env)


def record_in_dvc(say=print) -> list[str]:
    """`dvc commit` every noted stage made with the params.yaml now on disk; return the ones recorded.

    ``--no-relink`` leaves the files as the stage wrote them: a relinking copy would date a model
    after the files made from it, and Snakemake would redo those.
    """
    if not NOTES.is_dir():
        return []
    now = _params_digest()
    due, overridden = [], []
    for note in sorted(p for p in NOTES.iterdir() if not p.name.startswith(".")):
        made_with, _, source = note.read_text().strip().partition("\n")
        if made_with == now:
            due.append(note.name)
            continue
        note.unlink(missing_ok=True)  # made with other values than params.yaml's: DVC must not call it current
        if source and Path(source).resolve() != PARAMS.resolve():
            overridden.append(note.name)
        else:  # made with a params.yaml that has changed since
            say(f"r2kd: not recording {note.name} in dvc.lock: params.yaml changed after it ran, so DVC will "
                "rerun it")
    if overridden:
        say(f"r2kd: {len(overridden)} result(s) made with snakemake --config/--configfile overrides "
            f"({overridden[0]}, ...); not recorded in dvc.lock (`dvc status` shows them modified)")
    if not due:
        return []
    if _dvc("repro", "--quiet", "--single-item", "check").returncode != 0:  # DVC's gate files, deps of every stage
        say("r2kd: `dvc repro check` failed, so Snakemake's results are not recorded in dvc.lock yet; "
            "the next snakemake run records them")
        return []
    recorded = due if _dvc("commit", "--force", "--quiet", "--no-relink", *due).returncode == 0 else [
        name for name in due if _dvc("commit", "--force", "--quiet", "--no-relink", name).returncode == 0]
    for name in recorded:
        (NOTES / name).unlink(missing_ok=True)
    missed = sorted(set(due) - set(recorded))
    if missed:
        say(f"r2kd: could not record {len(missed)} stage(s) in dvc.lock ({missed[0]}, ...): run "
            "`dvc commit <stage>` once they are complete, before any `dvc exp run`")
    if recorded:
        say(f"r2kd: recorded {len(recorded)} stage(s) Snakemake ran in dvc.lock and DVC's cache "
            "(`dvc checkout` can restore them)")
    return recorded


def missing_results() -> list[str]:
    """The outputs dvc.lock records that are not on disk (DVC's cache can restore them)."""
    return [out for stage in _lock_stages().values() for out in stage["outs"] if not Path(out).exists()]


def remove_empty_folders(top: Path = Path("runs")) -> None:
    for folder in sorted((p for p in top.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only an empty one goes


_held: IO | None = None  # DVC's repo lock, held for as long as this file stays open (the Snakemake run)


def snakemake_started() -> None:
    """Snakemake's `onstart`: record what a killed run left, then hold DVC off for the run."""
    global _held
    record_in_dvc()
    if not Path(".dvc").is_dir():
        return
    DVC_REPO_LOCK.parent.mkdir(parents=True, exist_ok=True)
    handle = open(DVC_REPO_LOCK, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError("a DVC command is running in this checkout (it holds .dvc/tmp/lock); wait for it to "
                        "finish, then rerun snakemake") from None
    others = running_dvc()  # the rwlock reader the stage commands use
    if others:
        handle.close()
        raise UserError(f"DVC is running a stage in this checkout ({others[0]}); wait for it to finish, "
                        "then rerun snakemake")
    _held = handle


def snakemake_ended() -> None:
    """Snakemake's `onsuccess` and `onerror`: let DVC in again, and record what this run made."""
    global _held
    if _held is not None:
        _held.close()  # releases the flock
    _held = None
    record_in_dvc()


def _newest(path: Path, code: Callable[[Path], tuple[dict[Path, str], float]]) -> float:
    """The mtime Snakemake would compare: a file's, or the newest file's inside a folder (bytecode,
    which DVC ignores too, left out); a code stamp's, or its newest source file's: Snakemake's own
    stamp is dated when they last changed."""
    if path.is_dir():
        return max((p.stat().st_mtime for p in path.rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts), default=path.stat().st_mtime)
    return max(path.stat().st_mtime, code(path)[1])


def _code(path: Path) -> tuple[dict[Path, str], float]:
    """A DVC code stamp's source files with the SHA-256 each had when `check` wrote it, and the newest
    one's mtime (({}, 0) for another file)."""
    try:
        sources = {Path(n): d for n, d in json.loads(path.read_text()).items()} if path.parent == CODE_STAMPS else {}
    except (OSError, ValueError, AttributeError):
        return {}, 0.0
    return sources, max((f.stat().st_mtime for f in sources if f.exists()), default=0.0)


def _edited(sources: dict[Path, str]) -> bool:
    """Whether a source changed since its stamp was written: DVC, which sees only the stamp, does not
    know yet (a cohort reaches its methods' files only through its stamp)."""
    try:
        return any(hashlib.sha256(f.read_bytes()).hexdigest() != digest for f, digest in sources.items())
    except OSError:
        return True


def _files(path: Path) -> list[Path]:
    """A file, or a folder output with everything inside it (Snakemake may name the files one by one,
    or read the folder's own mtime, or its timestamp file)."""
    return [path, *path.rglob("*")] if path.is_dir() else [path]


def _oldest(path: Path) -> float:
    return min((p.stat().st_mtime for p in _files(path)), default=path.stat().st_mtime)


LOCK_PATHS = Path(".r2kd/dvc-lock-paths.json")  # _lock_stages' answer, for the dvc.lock it was read from


def _lock_stages() -> dict[str, dict[str, list[str]]]:
    """Each stage's dep and out paths in dvc.lock, kept in LOCK_PATHS with the file's SHA-256 (a few ms):
    parsing it (about 1 s at 1,000 student runs) is most of align_with_dvc's time, and Snakemake
    parses its rules on every call."""
    try:
        text = Path("dvc.lock").read_bytes()
    except OSError:
        return {}
    key = hashlib.sha256(text).hexdigest()
    try:
        kept = json.loads(LOCK_PATHS.read_text())
        if kept["dvc.lock"] == key:
            return kept["stages"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        lock = yaml.load(text.decode(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        stages = {name: {kind: [entry["path"] for entry in stage.get(kind, [])] for kind in ("deps", "outs")}
                  for name, stage in lock.get("stages", {}).items()}
    except (UnicodeDecodeError, yaml.YAMLError, AttributeError, KeyError, TypeError):
        return {}
    with contextlib.suppress(UserError):  # a read-only checkout: parse again next time
        write_text(LOCK_PATHS, json.dumps({"dvc.lock": key, "stages": stages}))
    return stages


def align_with_dvc(say=print) -> int:
    """Date the outputs DVC vouches for after their inputs, so Snakemake agrees with `dvc status`.

    DVC restores files in no order and without mtimes (and `dvc repro -f` rewrites them bit for bit),
    so Snakemake, comparing mtimes, would redo everything downstream (docs/reliability.md). When some
    output in dvc.lock is older than one of its stage's inputs (a stat of each, nothing more), ask DVC
    which stages are current and give their outputs the mtime of their newest input; changed stages
    keep their dates, and Snakemake reruns them as DVC would. Returns how many files were redated.
    """
    stages = _lock_stages()
    stages.pop("check", None)  # DVC's gate: no Snakemake job reads or writes it

    code = functools.cache(_code)  # each stamp read, and its sources dated, once

    def newest_dep(name: str) -> float:
        return max((_newest(Path(d), code) for d in stages[name]["deps"] if Path(d).exists()), default=0.0)

    def inverted(name: str) -> bool:
        outs = [Path(o) for o in stages[name]["outs"] if Path(o).exists()]
        return bool(outs) and min(map(_oldest, outs)) < newest_dep(name)

    try:
        if not any(inverted(name) for name in stages):
            return 0
        from dvc.exceptions import DvcException
        from dvc.repo import Repo

        with Repo(".") as repo:
            changed = set(repo.status())
    except (OSError, ImportError):
        return 0
    except DvcException:  # e.g. another DVC command holds the repo: leave the dates as they are
        return 0
    stamps = {Path(d) for stage in stages.values() for d in stage["deps"] if Path(d).parent == CODE_STAMPS}
    edited = {stamp for stamp in stamps if _edited(code(stamp)[0])}
    changed |= {name for name in stages if edited & {Path(d) for d in stages[name]["deps"]}}
    redated = 0
    for _ in range(len(stages)):  # dvc.lock lists stages upstream first; repeat until nothing moves
        moved = 0
        for name in stages:
            if name in changed or not inverted(name):
                continue
            newest = newest_dep(name)
            for out in map(Path, stages[name]["outs"]):
                for target in (_files(out) if out.exists() else []):
                    if target.stat().st_mtime < newest:
                        os.utime(target, (newest, newest))
                        moved += 1
        redated += moved
        if not moved:
            break
    if redated:
        say(f"r2kd: DVC vouches for {redated} restored or rewritten output(s) (dvc status): dated after their "
            "inputs, so Snakemake does not redo them")
    return redated
