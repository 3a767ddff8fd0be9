"""Run a training stage as N processes: the stage command re-launches itself through torchrun.

With ``runtime.nproc_per_node`` N > 1 and no torchrun world around it, `r2kd distill ...` runs the
same arguments (a list, no shell) as N processes on this machine and exits with their status
(docs/distributed.md). Torch-free, so the launching process (which only waits) never imports torch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Sequence

from r2kd.pipeline import DISTRIBUTED_STAGES  # the others run as one process

LOCK_HELD_ENV = "R2KD_STAGE_LOCK_HELD"  # set in the children of a launch: the launcher holds the stage lock for them
_WORLD_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


def in_world() -> bool:
    """True inside a torchrun (or other torch.distributed launcher) process."""
    return all(name in os.environ for name in _WORLD_ENV)


def is_global_main() -> bool:
    """Rank 0 of the world, or a plain process."""
    return os.environ.get("RANK", "0") == "0"


def needs_launch(stage: str, nproc_per_node: int) -> bool:
    return stage in DISTRIBUTED_STAGES and nproc_per_node > 1 and not in_world()


def torchrun_command(nproc_per_node: int, argv: Sequence[str], python: str = sys.executable) -> list[str]:
    """The torchrun invocation that runs ``python -m r2kd *argv`` as ``nproc_per_node`` processes
    on this machine (``--standalone``: a local rendezvous on a free port, no coordinator)."""
    if not 1 <= nproc_per_node <= 64:
        raise ValueError(f"nproc_per_node must be in [1, 64], got {nproc_per_node}")
    return [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc_per_node),
            "-m", "r2kd", *argv]


def place(nproc_per_node: int, device: str, jobs_per_gpu: int) -> dict[str, str]:
    """CUDA_VISIBLE_DEVICES for the children: ``nproc_per_node`` distinct GPUs with a free slot
    (r2kd.gpu_slots), held by this launcher until it exits, so that two multi-GPU jobs started side
    by side do not both run on cuda:0..N-1. Nothing is chosen when a scheduler already set
    CUDA_VISIBLE_DEVICES (SLURM), for a CPU run, or without nvidia-smi."""
    if device not in ("auto", "cuda") or "CUDA_VISIBLE_DEVICES" in os.environ:
        return {}
    from r2kd import gpu_slots, paths

    gpus = gpu_slots.nvidia_smi_gpu_ids()
    if len(gpus) < nproc_per_node:
        return {}  # no GPUs (a CPU run) or fewer than asked: the children say so when they start
    chosen = gpu_slots.claim_many(gpus, nproc_per_node, jobs_per_gpu, paths.GPU_SLOTS,
                                  on_wait=lambda: print("waiting for free GPU slots", file=sys.stderr, flush=True))
    return {"CUDA_VISIBLE_DEVICES": ",".join(gpus[i] for i in chosen)}


def relaunch(nproc_per_node: int, argv: Sequence[str], placement: dict[str, str] | None = None) -> int:
    """Run this stage command as ``nproc_per_node`` processes; their exit status (torchrun's)."""
    env = {**os.environ, **(placement or {}), LOCK_HELD_ENV: "1",
           # torchrun's default of one OpenMP thread per process is what runtime.threads sets anyway
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(torchrun_command(nproc_per_node, argv), env=env).returncode
