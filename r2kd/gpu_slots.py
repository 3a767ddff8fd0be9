"""Which GPU a job runs on when several jobs share a machine's GPUs.

Snakemake's ``--resources gpu=K`` and ``dvc queue start --jobs K`` only cap how many jobs run at
once; neither says which GPU a job gets, so with ``runtime.device: auto`` every job would land on
``cuda:0``. A job therefore claims a slot itself: slot j of GPU i is the lock file
``.r2kd/gpu-slots/<host>-<gpu uuid>-<j>.lock``, held with ``flock`` for the life of the process
(the kernel drops it when the process ends, crashed or not). A job takes the GPU with the most
free slots, ``resources.<stage>.jobs_per_gpu`` slots per GPU, and waits while all are taken.

GPUs are named by UUID, not index, so jobs started with different ``CUDA_VISIBLE_DEVICES`` (or on
different nodes sharing the checkout) never count each other's slots.
"""

from __future__ import annotations

import fcntl
import os
import socket
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
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def _taken(path: Path) -> bool:
    handle = _try_lock(path)
    if handle is None:
        return True
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()
    return False


def claim(gpu_ids: list[str], jobs_per_gpu: int, lock_dir: Path, *, poll_seconds: float = 0.5,
          timeout: float | None = None, on_wait: Callable[[], None] | None = None) -> int:
    """Index (into ``gpu_ids``) of the GPU this process may use; the slot is held until it exits.

    Waits while every slot is taken (``on_wait`` is called once, when the wait starts); raises
    TimeoutError after ``timeout`` seconds if given.
    """
    if not gpu_ids:
        raise ValueError("no GPU to claim a slot on")
    if jobs_per_gpu < 1:
        raise ValueError("jobs_per_gpu must be at least 1")
    lock_dir.mkdir(parents=True, exist_ok=True)
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())
    safe = ["".join(c if c.isalnum() or c == "-" else "_" for c in gpu) for gpu in gpu_ids]
    began, announced = time.monotonic(), False
    while True:
        free = [[j for j in range(jobs_per_gpu) if not _taken(lock_dir / f"{host}-{gpu}-{j}.lock")] for gpu in safe]
        # The least busy GPU first; ties go to the lower index.
        for index in sorted(range(len(safe)), key=lambda i: -len(free[i])):
            for slot in free[index]:
                handle = _try_lock(lock_dir / f"{host}-{safe[index]}-{slot}.lock")
                if handle is not None:  # another job may have taken it since we looked
                    _held.append(handle)
                    return index
        if timeout is not None and time.monotonic() - began > timeout:
            raise TimeoutError(f"no free GPU slot in {timeout:.0f} s ({len(safe)} GPUs x {jobs_per_gpu} jobs each)")
        if not announced and on_wait is not None:
            on_wait()
            announced = True
        time.sleep(poll_seconds)


def cuda_gpu_ids() -> list[str]:
    """UUIDs of the visible CUDA devices, in index order."""
    import torch

    return [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]
