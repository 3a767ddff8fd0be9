"""``runtime.overlap``: on the CPU, independent work runs on threads of its own. In a distill step the
frozen networks' forward passes run beside the student's (the next batch's clean passes already
during this step's backward pass and update), and an R2KD step's two views' backward passes beside
each other (:class:`r2kd.methods.objective.DistillObjective` uses them); the
``evaluate`` stage scores several models at once and ``corrupt`` shares its corruptions out among
processes (:func:`cpu_workers`).

Why: on the CPU an R2KD step is compute-bound and one stage runs at a time under ``dvc repro``, so
with ``runtime.threads: 1`` the second core of a 2-core machine idles. The teacher, the pruned
teacher and the student's forward passes do not depend on each other, so they can run side by
side; only the losses and the backward pass need all of them.

Why the numbers do not change: each pass runs the same kernels with the same intra-op thread
count (``runtime.threads``, set on every worker thread), just on another thread; each network
keeps its own single thread, so the pruned teacher's train-mode BatchNorm still updates its running
statistics clean view first; nothing on these threads draws random numbers (the views are drawn
by the caller). The caller's autocast state is thread-local in torch, so each pass takes it on.
tests/test_overlap.py checks terms, gradients and statistics against the serial step bit
for bit.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable, Iterable, Iterator, TypeVar

import torch


def thread_pool(workers: int, name: str, threads: int) -> ThreadPoolExecutor:
    """Threads that each run ops with ``threads`` intra-op threads, as the calling thread does: what
    keeps every value computed there the value the calling thread would compute."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"r2kd-{name}",
                              initializer=torch.set_num_threads, initargs=(threads,))


T = TypeVar("T")
R = TypeVar("R")


def map_in_order(fn: Callable[[T], R], items: Iterable[T], workers: int, name: str) -> Iterator[R]:
    """``fn`` over ``items``, results in order, ``workers`` at a time on threads (1: here, lazily).
    At most ``workers`` results wait to be taken, so memory stays that of a few items."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with thread_pool(workers, name, torch.get_num_threads()) as pool:
        pending: deque[Future] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class FrozenThreads:
    """One worker thread per frozen network name; work submitted for a name runs in order."""

    def __init__(self, names: Iterable[str], threads: int) -> None:
        self._pools = {name: thread_pool(1, name, threads) for name in names}

    def __contains__(self, name: str) -> bool:
        return name in self._pools

    def submit(self, name: str, fn: Callable[[], torch.Tensor], device_type: str) -> Future:
        """Run ``fn`` on ``name``'s thread under the caller's autocast state."""
        autocast = _autocast_of(device_type)
        return self._pools[name].submit(_within, autocast, fn)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=True)


def _autocast_of(device_type: str):
    if not torch.is_autocast_enabled(device_type):
        return None
    return device_type, torch.get_autocast_dtype(device_type)


def _within(autocast, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``fn()`` under the caller's autocast state. Not through ``torch.autocast``: leaving its
    outermost level clears the cache of weight casts, which is one cache for all threads, so the
    student's second view would cast its weights again (another graph, other gradients)."""
    if autocast is None:
        return fn()
    device_type, dtype = autocast
    was_enabled, was_dtype = torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
    torch.set_autocast_enabled(device_type, True)
    torch.set_autocast_dtype(device_type, dtype)
    try:
        return fn()
    finally:
        torch.set_autocast_enabled(device_type, was_enabled)
        torch.set_autocast_dtype(device_type, was_dtype)


def settle(futures: Iterable[Future]) -> None:
    """Wait until every pass has finished (succeeded or not). A step settles its own passes before
    it returns, and a failed step those it queued for the next batch too: after a failure no frozen
    network is still running, so its state (running statistics) is that of the batches trained."""
    wait(list(futures))


def usable_cores() -> int:
    """The cores this process may run on (a SLURM or taskset allocation, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# The pruned teacher first: in train-mode BatchNorm it is the slowest frozen pass (1.6x the teacher's
# forward, benchmarks/bench_methods.py), so with one spare core it is the one moved off.
HEAVIEST_FIRST = ("pruned", "teacher")


def frozen_threads_for(setting: str, device: torch.device, threads: int, processes: int,
                       nets: Iterable[str]) -> FrozenThreads | None:
    """The threads ``runtime.overlap`` gives a run whose method uses the frozen ``nets``, or None.

    CPU only, one process per run (the frozen wrappers of a multi-process run exchange logits with
    the other processes, in the order the calling thread issues its collectives). ``auto`` needs a
    core to spare: it moves as many networks off the calling thread as there are spare groups of
    ``threads`` cores (2 cores, 1 thread: the pruned teacher off, the teacher stays beside the
    student); ``always`` moves at least one."""
    nets = [name for name in HEAVIEST_FIRST if name in set(nets)]
    if processes > 1 or not nets:
        return None
    workers = cpu_workers(setting, device, threads)
    return FrozenThreads(nets[: workers - 1], threads) if workers > 1 else None


def scores_beside(setting: str, device: torch.device, threads: int, processes: int) -> bool:
    """Whether ``runtime.overlap`` scores each epoch beside the next one's training (Trainer.score_beside):
    CPU, one process per run, a core to spare (``auto``) or ``always``."""
    return processes == 1 and cpu_workers(setting, device, threads) > 1


def cpu_workers(setting: str, device: torch.device, threads: int) -> int:
    """How many threads of ``threads`` intra-op threads each a CPU job may keep busy at once under
    ``runtime.overlap`` (1: no overlap): ``auto`` as many as the process's cores hold, ``always``
    at least 2; never on another device."""
    if setting == "never" or device.type != "cpu":
        return 1
    workers = usable_cores() // max(threads, 1)
    return max(workers, 2) if setting == "always" else max(workers, 1)
