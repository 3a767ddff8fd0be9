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


def test_a_multi_gpu_job_takes_distinct_gpus_all_or_nothing(tmp_path):
    from r2kd.gpu_slots import claim_many

    gpus = ["GPU-a", "GPU-b", "GPU-c"]
    holder = _start(tmp_path, gpus, 1, hold=30)  # one single-GPU job holds a GPU
    try:
        held = _index(holder)
        chosen = claim_many(gpus, 2, 1, tmp_path)
        assert len(set(chosen)) == 2 and held not in chosen
        # every GPU is taken now: a further 1-GPU claim waits, and times out
        with pytest.raises(TimeoutError):
            claim_many(gpus, 1, 1, tmp_path, poll_seconds=0.01, timeout=0.1)
        with pytest.raises(ValueError, match="needs 4 GPUs"):
            claim_many(gpus, 4, 1, tmp_path)
    finally:
        holder.kill()
        holder.wait()


def test_the_launcher_places_a_job_only_where_nobody_placed_it(monkeypatch, tmp_path):
    from r2kd import gpu_slots, launch, paths

    monkeypatch.setattr(paths, "GPU_SLOTS", tmp_path)
    monkeypatch.setattr(gpu_slots, "nvidia_smi_gpu_ids", lambda: ["GPU-a", "GPU-b", "GPU-c", "GPU-d"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    first = launch.place(2, "auto", 1)["CUDA_VISIBLE_DEVICES"].split(",")
    second = launch.place(2, "cuda", 1)["CUDA_VISIBLE_DEVICES"].split(",")
    assert len(set(first + second)) == 4  # two 2-GPU jobs side by side: four different GPUs
    assert launch.place(2, "cpu", 1) == {}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # a scheduler placed it: leave it
    assert launch.place(2, "auto", 1) == {}


def test_a_process_asking_for_its_device_again_keeps_its_slot(monkeypatch, tmp_path):
    """A stage function called twice in one process (tests do; so does a cohort) must not wait for
    a second slot while it holds the only one."""
    import torch

    from r2kd import gpu_slots, paths, runtime

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(gpu_slots, "cuda_gpu_ids", lambda: ["GPU-only"])
    monkeypatch.setattr(runtime, "_claimed_gpu", {})
    waits = []
    real_claim = gpu_slots.claim
    monkeypatch.setattr(gpu_slots, "claim", lambda *a, **k: real_claim(*a, **{**k, "timeout": 2.0,
                                                                              "on_wait": lambda: waits.append(1)}))
    first = runtime.resolve_device("auto", jobs_per_gpu=1)
    again = runtime.resolve_device("auto", jobs_per_gpu=1)
    assert first == again == torch.device("cuda", 0) and not waits
    assert len(list((tmp_path / paths.GPU_SLOTS).glob("*.lock"))) == 1
