"""What the paper's matrix costs in GPU time: K student runs packed on one GPU against the official
code's one run per GPU.

    python benchmarks/bench_matrix.py --device cuda                 # K = 1, 2, 4, 8 on one GPU
    python benchmarks/bench_matrix.py --device cpu --shape default --procs 1 2 --steps 5   # a dry run

Each of K processes (spawned, as Snakemake or `dvc queue` would start K stage processes) builds the
resnet32x4 -> resnet8x4 R2KD set-up at CIFAR-100 shape and runs the project's default step (on
CUDA: the fast path, replayed as a CUDA graph) on its own batch; after the warm-up every process
waits at one barrier, then runs ``--steps`` steps. Aggregate throughput = K x steps / (last end -
first start). The baseline, measured first in a process of its own on the same device, is the
plain reference step of benchmarks/bench_step.py, one process on the GPU as the official code runs.

GPU-hours of the matrix relative to the official code = reference ms per step / (1000 / aggregate
steps per second): same epochs, same steps per run, so the ratio of per-step costs is the ratio of
GPU-hours.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.multiprocessing as mp
from rich.console import Console
from rich.table import Table

console = Console(width=140)


def _setup(shape: str, device: torch.device):
    from benchmarks.bench_step import SHAPES, reference_pruned
    from r2kd import models
    from r2kd.config import PruneConfig
    from r2kd.methods import METHODS
    from r2kd.methods.objective import DistillObjective
    from r2kd.pruning import prune_teacher, set_bn_mode
    from r2kd.runtime import fast_layout

    t_name, s_name, ch, side, classes = SHAPES[shape]
    torch.manual_seed(0)
    build = lambda n: models.create(n, classes, in_channels=ch, input_size=side).to(device)  # noqa: E731
    teacher = set_bn_mode(build(t_name), "eval")
    x = torch.randn(64, ch, side, side, device=device)
    y = torch.randint(0, classes, (64,), device=device)
    pruned = set_bn_mode(prune_teacher(copy.deepcopy(teacher), x[:2], PruneConfig()).model, "train")
    student = build(s_name).train()
    fast = device.type == "cuda"
    if fast:
        teacher, pruned, student = (fast_layout(m) for m in (teacher, pruned, student))
    r2kd = METHODS["r2kd"]
    objective = DistillObjective(method=r2kd(r2kd.Params(aug_view="cutmix")), teacher=teacher, pruned=pruned,
                                 view_generator=torch.Generator().manual_seed(0), mean=[0.0] * ch, std=[1.0] * ch,
                                 fast=fast)
    return objective, student, x, y, reference_pruned, teacher


def _worker(rank: int, shape: str, device_name: str, steps: int, amp: str, deterministic: bool, barrier,
            results) -> None:
    from benchmarks.bench_step import project_step_fn
    from r2kd.optim import SGD
    from r2kd.runtime import seed_everything

    torch.set_num_threads(1)
    seed_everything(0, deterministic)
    device = torch.device(device_name)
    objective, student, x, y, _, _ = _setup(shape, device)
    step = project_step_fn(objective, student, SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4),
                           x, y, amp=amp, graphs=device.type == "cuda")
    for _ in range(6):  # warm-up and capture
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    barrier.wait()
    began = time.time()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    results.put((rank, began, time.time(), step.step.kind))


def packed(k: int, shape: str, device: str, steps: int, amp: str, deterministic: bool) -> tuple[float, float, str]:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, shape, device, steps, amp, deterministic, barrier, results))
             for r in range(k)]
    for p in procs:
        p.start()
    out = [results.get(timeout=900) for _ in procs]
    for p in procs:
        p.join()
    start, end = min(o[1] for o in out), max(o[2] for o in out)
    kinds = sorted({o[3] for o in out})
    return k * steps / (end - start), (end - start) / steps * 1e3, "/".join(kinds)


def reference_ms(shape: str, device_name: str, steps: int, deterministic: bool) -> float:
    from benchmarks.bench_step import interleaved, reference_step
    from r2kd.runtime import seed_everything

    seed_everything(0, deterministic)
    device = torch.device(device_name)
    _, student, x, y, reference_pruned, teacher = _setup(shape, device)
    student = student.to(memory_format=torch.contiguous_format)
    teacher = teacher.to(memory_format=torch.contiguous_format)
    pruned = reference_pruned(teacher)
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=False)
    times = interleaved({"ref": lambda: reference_step("r2kd", student, teacher, pruned, opt, x, y)}, steps, 5, device)
    return times["ref"] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--shape", default="cifar100", choices=["cifar100", "default"])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--amps", nargs="+", default=["none"], choices=["none", "bf16"],
                        help="runtime.amp of the packed runs (bf16: opt-in, changes rounding)")
    parser.add_argument("--nondeterministic", action="store_true")
    args = parser.parse_args()
    deterministic = not args.nondeterministic
    torch.set_num_threads(1)
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    console.print(f"torch {torch.__version__}, {name}, shape {args.shape}, {args.steps} steps per process, "
                  f"{'deterministic' if deterministic else 'non-deterministic'} kernels")
    ref = reference_ms(args.shape, args.device, min(args.steps, 40), deterministic)
    table = Table(title="R2KD student runs packed on one device (default settings) vs the reference, one run per device")
    for col in ("runs on the device", "amp", "step kind", "aggregate steps/s", "wall ms per step (each run)",
                "GPU time per student-step vs reference"):
        table.add_column(col)
    table.add_row(f"reference ({'deterministic' if deterministic else 'non-deterministic'} kernels), 1", "none", "plain eager", f"{1000 / ref:.1f}", f"{ref:.1f}", "1.00 (baseline)")
    for amp in args.amps:
        for k in args.procs:
            rate, wall_ms, kinds = packed(k, args.shape, args.device, args.steps, amp, deterministic)
            table.add_row(str(k), amp, kinds, f"{rate:.1f}", f"{wall_ms:.1f}",
                          f"{(1000 / rate) / ref:.3f}  (1/{ref * rate / 1000:.1f})")
    console.print(table)


if __name__ == "__main__":
    main()
