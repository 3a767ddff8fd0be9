"""One run of a stage at a time per checkout, and never under two tools at once.

DVC and Snakemake each lock a checkout against themselves, not against each other. So every stage
command refuses to start while the *other* tool is running here, naming it, and holds a per-stage
lock: two processes never run the same stage (and write the same resume file) at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from pathlib import Path
from typing import Iterator

from r2kd.errors import UserError

LOCKS = Path(".r2kd/locks")
DVC_RWLOCK = Path(".dvc/tmp/rwlock")  # DVC lists the pid and command of every running stage here
SNAKEMAKE_LOCKS = Path(".snakemake/locks")


def process_alive(pid: int) -> bool:
    if pid <= 0:  # os.kill(0, …) would signal our own process group: a malformed entry is no process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            break
        pid = int(fields[1])
    return pids


def running_dvc() -> list[str]:
    """Live DVC processes in this checkout other than the one running us."""
    try:
        table = json.loads(DVC_RWLOCK.read_text())
    except (OSError, ValueError):
        return []
    infos = [*table.get("write", {}).values(), *(i for lst in table.get("read", {}).values() for i in lst)]
    mine = _ancestors()
    return sorted({f"pid {i['pid']}: {i['cmd']}" for i in infos
                   if isinstance(i, dict) and i.get("pid") not in mine and process_alive(int(i.get("pid", 0)))})


def check_other_tool() -> None:
    if os.environ.get("DVC_STAGE"):  # we run under DVC: is Snakemake running here?
        held = sorted(p.name for p in SNAKEMAKE_LOCKS.glob("*.lock")) if SNAKEMAKE_LOCKS.is_dir() else []
        if held:
            raise UserError(f"Snakemake holds this checkout ({SNAKEMAKE_LOCKS}/{held[0]}); wait for it to finish, or "
                            "run `snakemake --unlock` if no Snakemake is running, then rerun")
        return
    others = running_dvc()
    if others:
        raise UserError(f"DVC is running in this checkout ({others[0]}); wait for it to finish, then rerun")


def _lock_error(path: Path, what: str, exc: OSError) -> UserError:
    """A one-line error for a lock file the OS refused (a full disk, a read-only or foreign folder)."""
    return UserError(f"cannot {what} the lock file {path}: {exc.strerror or exc}")


@contextlib.contextmanager
def stage_lock(name: str) -> Iterator[None]:
    """Hold the lock of stage ``name`` (e.g. "distill@pair-kd-none-0") for the block: an exclusive flock,
    the holder's pid and command written in it. The OS refusing the lock file itself (ENOSPC, EACCES,
    EROFS, …) is a UserError naming it; errors of the block are left as they are."""
    check_other_tool()
    path = LOCKS / f"{name.replace('/', '_')}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")
    except OSError as exc:
        raise _lock_error(path, "create", exc) from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise UserError(f"stage {name} is already running in this checkout "
                            f"({fh.read().strip() or 'another process'}); wait for it to finish") from None
        except OSError as exc:  # e.g. ENOLCK on a file system without locks
            raise _lock_error(path, "lock", exc) from None
        # Written on the descriptor, unbuffered: a line left in a buffer by a failed write (a full
        # disk) would fail again, with a traceback, when the file is closed.
        fd = fh.fileno()
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}: {' '.join(['r2kd', *sys.argv[1:]])}\n".encode())  # O_APPEND: at 0
        except OSError as exc:
            raise _lock_error(path, "write", exc) from None
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
