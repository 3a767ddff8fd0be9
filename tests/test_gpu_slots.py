"""GPU placement of jobs that run side by side (r2kd.gpu_slots): exercised with made-up GPU ids,
in separate processes, because the slots are per-process locks."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from r2kd.gpu_slots import claim

REPO = Path(__file__).resolve().parents[1]

HOLDER = """
import sys, time
from pathlib import Path
from r2kd.gpu_slots import claim
index = claim(sys.argv[2].split(","), int(sys.argv[3]), Path(sys.argv[1]), poll_seconds=0.05, timeout=float(sys.argv[4]))
print(index, flush=True)
time.sleep(float(sys.argv[5]))
"""


def _start(lock_dir: Path, gpus: list[str], per_gpu: int, hold: float, timeout: float = 20.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_dir), ",".join(gpus), str(per_gpu), str(timeout),
                             str(hold)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _index(proc: subprocess.Popen) -> int:
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return int(line)


def test_jobs_spread_over_the_gpus_and_wait_when_every_slot_is_taken(tmp_path):
    gpus = ["GPU-aaaa", "GPU-bbbb"]
    first = _start(tmp_path, gpus, 1, hold=30)
    second = _start(tmp_path, gpus, 1, hold=30)
    placed = sorted([_index(first), _index(second)])
    assert placed == [0, 1]  # one job per GPU, not both on cuda:0
    # A third job finds no free slot and waits: it gives up only after its timeout.
    third = _start(tmp_path, gpus, 1, hold=0, timeout=1.0)
    assert third.wait(timeout=30) != 0 and "TimeoutError" in third.stderr.read()
    # ... and gets the slot as soon as a holder ends (the kernel frees a dead process's lock).
    waiting = _start(tmp_path, gpus, 1, hold=0, timeout=20)
    time.sleep(0.5)
    first.kill()
    first.wait()
    assert _index(waiting) in (0, 1)
    waiting.wait(timeout=30)
    second.kill()
    second.wait()


def test_several_jobs_per_gpu_fill_the_least_busy_gpu_first(tmp_path):
    gpus = ["GPU-aaaa", "GPU-bbbb"]
    procs = [_start(tmp_path, gpus, 2, hold=30) for _ in range(4)]
    try:
        placed = [_index(p) for p in procs]
        assert sorted(placed) == [0, 0, 1, 1]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_the_same_process_can_hold_two_slots_and_bad_arguments_are_refused(tmp_path):
    assert claim(["GPU-x"], 2, tmp_path) == 0
    assert claim(["GPU-x"], 2, tmp_path) == 0
    with pytest.raises(TimeoutError):
        claim(["GPU-x"], 2, tmp_path, poll_seconds=0.01, timeout=0.1)
    with pytest.raises(ValueError):
        claim([], 1, tmp_path)
    with pytest.raises(ValueError):
        claim(["GPU-x"], 0, tmp_path)
