"""Data-parallel work beside the method, on the CPU: the ``evaluate`` stage scores several models
at once on threads (:func:`map_in_order`) and ``corrupt`` shares its corruptions out among processes.
Each item is computed by the kernels it would run alone, with ``runtime.threads`` intra-op threads,
so the results are the bytes of doing them one by one (tests/test_cohort.py, tests/test_robustness.py).
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def usable_cores() -> int:
    """The cores this process may run on (a SLURM or taskset allocation, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_workers(device: torch.device, threads: int) -> int:
    """How many jobs of ``threads`` intra-op threads each the process's cores hold at once (1 on
    another device than the CPU)."""
    return max(usable_cores() // max(threads, 1), 1) if device.type == "cpu" else 1


def map_in_order(fn: Callable[[T], R], items: Iterable[T], workers: int, name: str) -> Iterator[R]:
    """``fn`` over ``items``, results in order, ``workers`` at a time on threads (1: here, lazily).
    At most ``workers`` results wait to be taken, so memory stays that of a few items."""
    if workers <= 1:
        yield from map(fn, items)
        return
    threads = torch.get_num_threads()  # each worker thread runs ops as the calling thread does
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"r2kd-{name}",
                            initializer=torch.set_num_threads, initargs=(threads,)) as pool:
        pending: deque[Future] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
