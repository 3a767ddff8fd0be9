"""Atomic writes and safe, weights-only loading.

Every artefact is written to a temporary file in the same directory and renamed into place, so a
killed process never leaves a truncated file that a later stage or DVC could take for a result.
Every checkpoint is read with ``torch.load(..., weights_only=True)``: tensors and plain containers
only, never arbitrary pickled objects.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, TypeVar

from r2kd.errors import CheckpointError, UserError
from r2kd.pickle_scan import foreign_globals

if TYPE_CHECKING:
    import torch
# torch is imported where a checkpoint or tensor is handled, not here: `r2kd check` (the first stage
# of every `dvc repro`) and the JSON writers then start in 0.2 s instead of 2 s.
_T = TypeVar("_T")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        mask = os.umask(0)  # read it (mkstemp makes 0600; results are ordinary files)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from exc
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except (OSError, RuntimeError) as exc:
        reason = write_failure(exc, path.parent)
        if reason is None:
            raise
        raise UserError(f"cannot write {path}: {reason}") from exc
    finally:
        tmp_path.unlink(missing_ok=True)


# What torch's zip writer (PyTorchStreamWriter) says when the underlying write fails. On a full disk
# it raises RuntimeError("[enforce fail at inline_container.cc:...] ...") and the OSError, if any,
# is only its __context__.
_ZIP_WRITER_FAILURES = ("inline_container.cc", "PytorchStreamWriter failed", "file write failed")


def write_failure(exc: BaseException, directory: Path) -> str | None:
    """Why a write failed, if ``exc`` is or wraps an I/O failure; None for any other error."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError):
            return cause.strerror or str(cause)
        cause = cause.__cause__ or cause.__context__
    if not isinstance(exc, RuntimeError) or not any(s in str(exc) for s in _ZIP_WRITER_FAILURES):
        return None
    # No OSError survived (torch checks positions, not errno): ask the file system, while the
    # temp file still holds the space it took.
    try:
        full = os.statvfs(directory).f_bavail == 0
    except OSError:
        full = False
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return os.strerror(errno.ENOSPC) if full else f"write failed ({detail})"


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    torch = sys.modules.get("torch")  # no tensor can exist unless torch was imported
    if torch is not None and isinstance(obj, torch.Tensor):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        from r2kd.paths import producer

        raise UserError(f"{path} does not exist; run {producer(path) or 'the stage that produces it'} first") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); delete it and rerun its stage") from exc


def save_checkpoint(path: str | os.PathLike, obj: Any) -> None:
    """Save tensors / plain containers atomically (loadable with weights_only=True)."""
    import torch

    with atomic_path(path) as tmp:
        # Through a file object: given a path, torch names the archive after the (random) temp
        # file, and identical content would hash differently on every run.
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)


REWRITE = "delete it and rerun the stage that writes it"


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", *, remedy: str = REWRITE
) -> Any:
    """Load a checkpoint with the weights-only unpickler; refuse anything else with a clear error.

    ``remedy`` is the way out the error offers; an imported file that no stage writes needs another.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/foreign files
        refused = exc
    # Decide from the file's opcodes, not from torch's wording, which changes between versions.
    foreign = foreign_globals(path)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise CheckpointError(
            f"{path} contains pickled Python objects, not just tensors (it names {shown}); weights-only "
            "loading refuses such objects because unpickling them can run code, and nothing in it was run. "
            f"It may be a malicious file: do not load it with full unpickling; {remedy}"
        ) from None
    raise CheckpointError(
        f"{path} is corrupt, truncated or not a PyTorch checkpoint ({type(refused).__name__}); {remedy}"
    ) from None


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def sha256_state_dict(state: dict[str, torch.Tensor]) -> str:
    """Hash of tensor contents (not of the pickle bytes, which embed storage ids)."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        flat = tensor.reshape(-1)  # a 0-d tensor cannot be viewed as bytes
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


class Ticker:
    """The progress count of the stages that do not train (corrupt, evaluate, export): a rich bar on a
    terminal; elsewhere (a log file, CI, DVC's captured output) one plain line at the start, then one
    every ``every`` seconds and one at the end, on stderr."""

    def __init__(self, total: int, description: str, every: float = 10.0):
        self.total, self.description, self.every, self.done = total, description, every, 0
        self._bar = None

    def __enter__(self) -> "Ticker":
        from rich.console import Console

        console = Console(stderr=True)
        if console.is_terminal:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total)
        else:
            print(f"{self.description}: 0/{self.total}", file=sys.stderr, flush=True)
        self._began = self._last = time.perf_counter()
        return self

    def advance(self, *_: object) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.advance(self._task)
            return
        now = time.perf_counter()
        if now - self._last >= self.every or self.done == self.total:
            print(f"{self.description}: {self.done}/{self.total} ({now - self._began:.0f} s)", file=sys.stderr, flush=True)
            self._last = now

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def progress(items: Iterable[_T], total: int, description: str, every: float = 10.0) -> Iterator[_T]:
    """``items``, counted by a :class:`Ticker`."""
    with Ticker(total, description, every) as ticker:
        for item in items:
            yield item
            ticker.advance()
