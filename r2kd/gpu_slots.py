"""Which GPU a job runs on when several jobs share a machine's GPUs (docs/distributed.md).

Snakemake's ``--resources gpu=K`` and ``dvc queue start --jobs K`` only cap how many jobs run at
once, so with ``runtime.device: auto`` every job would land on ``cuda:0``. A job therefore claims a
slot itself: slot j of GPU i is the lock file ``<host>-<gpu uuid>-<j>.lock``, held with ``flock``
for the life of the process (the kernel drops it when the process ends, crashed or not). GPUs are
named by UUID, not index, so jobs with different ``CUDA_VISIBLE_DEVICES`` (or on different nodes
sharing the checkout) never count each other's slots.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, TextIO

_held: list[TextIO] = []  # open lock files: closing one would free its slot


def _try_lock(path: Path) -> TextIO | None:
    handle = open(path, "a+")  # noqa: SIM115 - kept open on purpose: the lock lives with the handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.truncate(0)  # append mode: the write then lands at 0
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def _taken(path: Path) -> bool:
    handle = _try_lock(path)
    if handle is not None:
        handle.close()  # closing the only descriptor drops the flock
    return handle is None


def claim(gpu_ids: list[str], jobs_per_gpu: int, lock_dir: Path, *, poll_seconds: float = 0.5,
          timeout: float | None = None, on_wait: Callable[[], None] | None = None) -> int:
    """Index (into ``gpu_ids``) of the GPU this process may use; the slot is held until it exits."""
    return claim_many(gpu_ids, 1, jobs_per_gpu, lock_dir, poll_seconds=poll_seconds, timeout=timeout,
                      on_wait=on_wait)[0]


def claim_many(gpu_ids: list[str], count: int, jobs_per_gpu: int, lock_dir: Path, *, poll_seconds: float = 0.5,
               timeout: float | None = None, on_wait: Callable[[], None] | None = None) -> list[int]:
    """``count`` distinct GPUs with a free slot each (a job of ``count`` processes, one per GPU),
    least busy first; all or nothing, held until this process exits. Waits while too few are free
    (``on_wait`` is called once, when the wait starts); raises TimeoutError after ``timeout`` seconds."""
    if not gpu_ids:
        raise ValueError("no GPU to claim a slot on")
    if jobs_per_gpu < 1:
        raise ValueError("jobs_per_gpu must be at least 1")
    if not 1 <= count <= len(gpu_ids):
        raise ValueError(f"a job of {count} processes needs {count} GPUs; {len(gpu_ids)} are visible")
    lock_dir.mkdir(parents=True, exist_ok=True)
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())
    safe = ["".join(c if c.isalnum() or c == "-" else "_" for c in gpu) for gpu in gpu_ids]
    began, announced = time.monotonic(), False
    while True:
        free = [[j for j in range(jobs_per_gpu) if not _taken(lock_dir / f"{host}-{gpu}-{j}.lock")] for gpu in safe]
        taken: list[tuple[int, TextIO]] = []
        # The least busy GPUs first; ties go to the lower index.
        for index in sorted(range(len(safe)), key=lambda i: -len(free[i])):
            for slot in free[index]:
                handle = _try_lock(lock_dir / f"{host}-{safe[index]}-{slot}.lock")
                if handle is not None:  # another job may have taken it since we looked
                    taken.append((index, handle))
                    break
            if len(taken) == count:
                _held.extend(handle for _, handle in taken)
                return [index for index, _ in taken]
        for _, handle in taken:  # not enough GPUs free: give the slots back (close drops the flock) and wait
            handle.close()
        if timeout is not None and time.monotonic() - began > timeout:
            raise TimeoutError(f"no {count} free GPU slot(s) in {timeout:.0f} s ({len(safe)} GPUs x "
                               f"{jobs_per_gpu} jobs each)")
        if not announced and on_wait is not None:
            on_wait()
            announced = True
        time.sleep(poll_seconds)


def nvidia_smi_gpu_ids() -> list[str]:
    """UUIDs of the machine's GPUs without importing torch (the torchrun launcher stays light);
    empty when nvidia-smi is missing or fails."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def cuda_gpu_ids() -> list[str]:
    """UUIDs of the visible CUDA devices, in index order."""
    import torch

    return [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]
