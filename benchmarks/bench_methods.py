"""Cost of one training step per distillation method, as a ratio to the CE-only student, and the
speed of the pruned teacher against the teacher; all measured in this one process.

    python benchmarks/bench_methods.py                       # embedded default (8x8 grey)
    python benchmarks/bench_methods.py --teacher resnet32x4 --student resnet8x4 --size 32 --channels 3 --classes 100

METHOD.md §4 predicts R2KD costs 2 student forward/backward passes and 4 frozen forwards per step.
Use the numbers to size a run: seconds per epoch = steps per epoch x the printed step time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from r2kd import models
from r2kd.config import PruneConfig
from r2kd.methods import METHODS
from r2kd.methods.objective import DistillObjective
from r2kd.optim import SGD
from r2kd.pruning import prune_teacher, set_bn_mode
from r2kd.runtime import resolve_device


def timed(fn, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="wrn_16_2")
    parser.add_argument("--student", default="resnet8")
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    build = lambda name: models.create(name, args.classes, in_channels=args.channels, input_size=args.size).to(device)
    teacher = build(args.teacher).eval()
    x = torch.randn(args.batch, args.channels, args.size, args.size, device=device)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    pruned = prune_teacher(teacher, x[:2], PruneConfig(method="torch_pruning", ratio=0.1)).model.to(device)
    set_bn_mode(pruned, "train")

    rows = []
    for name, cls in METHODS.items():
        params = cls.Params()
        student = build(args.student).train()
        optimizer = SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        objective = DistillObjective(method=cls(params), teacher=teacher, pruned=pruned,
                                     view_generator=torch.Generator().manual_seed(0), mean=[0.0] * args.channels,
                                     std=[1.0] * args.channels)

        def step():
            loss = sum(objective(student, x, y, 30).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        rows.append((f"{name} (view: {cls(params).aug_view})", timed(step, args.steps, 3, device)))

    with torch.no_grad():
        t_teacher = timed(lambda: teacher(x), args.steps, 3, device)
        t_pruned_train_bn = timed(lambda: pruned(x), args.steps, 3, device)  # as used in R2KD (reference)
        pruned.eval()
        t_pruned = timed(lambda: pruned(x), args.steps, 3, device)  # like for like with the eval-mode teacher

    base = dict(rows)[next(r for r, _ in rows if r.startswith("ce "))]
    table = Table(title=f"train step, {args.teacher} -> {args.student}, {args.channels}x{args.size}x{args.size}, "
                        f"batch {args.batch}, {device}, {args.threads} threads (median of {args.steps})")
    for col in ("method", "ms / step", "ratio to ce"):
        table.add_column(col)
    for name, seconds in rows:
        table.add_row(name, f"{seconds * 1e3:.1f}", f"{seconds / base:.2f}")
    console = Console(width=120)
    console.print(table)
    console.print(f"forward, eval-mode BN: teacher {t_teacher * 1e3:.1f} ms, pruned teacher (torch_pruning 0.1) "
                  f"{t_pruned * 1e3:.1f} ms, ratio {t_pruned / t_teacher:.2f}; pruned with train-mode BN (as in R2KD) "
                  f"{t_pruned_train_bn * 1e3:.1f} ms, ratio {t_pruned_train_bn / t_teacher:.2f}; params "
                  f"{models.count_parameters(teacher):,} -> {models.count_parameters(pruned):,}")


if __name__ == "__main__":
    main()
