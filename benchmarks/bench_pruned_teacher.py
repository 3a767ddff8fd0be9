"""Forward speed of the pruned teacher against the teacher, as ratios measured in this one process.

    python benchmarks/bench_pruned_teacher.py                  # CPU: resnet32x4 at 32x32 and the digits default
    python benchmarks/bench_pruned_teacher.py --device cuda    # on a GPU
    python benchmarks/bench_pruned_teacher.py --only digits --threads 2

For each case (resnet32x4 on CIFAR-shaped 3x32x32 inputs, 100 classes; wrn_16_2 on the embedded
digits default, 1x8x8, 10 classes) and each pruning setting (l1_unstructured; torch_pruning with
round_to None / 8 / 16), the teacher (eval mode) and the pruned teacher (BatchNorm in train mode,
as the reference distils, and in eval mode) run forward on one batch (default 64). Weights are
random: speed does not depend on them. The models take turns, one forward each per repeat; times
are medians and each speed-up is the median of the per-repeat ratios, so a drift in machine load
hits teacher and pruned teacher alike. Compare the ratios, not the milliseconds, across machines or
runs (timings drift by up to 30 % on a shared CPU).
"""

from __future__ import annotations

import argparse

import torch
from rich.console import Console
from rich.table import Table

from r2kd import models
from r2kd.config import PruneConfig
from r2kd.pruning import prune_teacher
from r2kd.pruning.measure import speed
from r2kd.runtime import resolve_device

CASES = {
    "resnet32x4": {"arch": "resnet32x4", "classes": 100, "channels": 3, "size": 32},
    "digits": {"arch": "wrn_16_2", "classes": 10, "channels": 1, "size": 8},
}
SETTINGS = [
    ("l1_unstructured", PruneConfig(method="l1_unstructured")),
    ("torch_pruning", PruneConfig(method="torch_pruning")),
    ("torch_pruning round_to 8", PruneConfig(method="torch_pruning", round_to=8)),
    ("torch_pruning round_to 16", PruneConfig(method="torch_pruning", round_to=16)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--repeats", type=int, default=9, help="forward passes per model, taking turns (median)")
    parser.add_argument("--only", choices=sorted(CASES), action="append", help="run only these cases")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    console = Console(width=160)  # a table, not a wrapped mess, when piped
    table = Table(title=f"pruned teacher vs teacher, forward of a batch of {args.batch} on {device} "
                        f"({args.threads} thread(s)), ratio {args.ratio}")
    for col in ("case", "pruning", "params kept", "MACs kept", "teacher ms", "pruned ms (BN train)",
                "pruned ms (eval)", "speed-up (BN train)", "speed-up (eval)"):
        table.add_column(col, justify="left" if col in ("case", "pruning") else "right")
    for case in args.only or list(CASES):
        spec = CASES[case]
        torch.manual_seed(0)
        teacher = models.create(spec["arch"], spec["classes"], in_channels=spec["channels"],
                                input_size=spec["size"]).to(device).eval()
        x = torch.randn(args.batch, spec["channels"], spec["size"], spec["size"], device=device)
        for label, config in SETTINGS:
            config = PruneConfig(**{**config.model_dump(), "ratio": args.ratio})
            result = prune_teacher(teacher, x[:2], config)
            t = speed(teacher, result.model, x, "train", repeats=args.repeats)
            table.add_row(
                f"{spec['arch']} {spec['channels']}x{spec['size']}x{spec['size']}", label,
                f"{result.stats.params_kept:.3f}", f"{result.stats.macs_kept:.3f}",
                f"{t['teacher_ms']:.2f}", f"{t['pruned_bn_train_ms']:.2f}", f"{t['pruned_eval_ms']:.2f}",
                f"{t['speedup_bn_train']:.2f}x", f"{t['speedup_eval']:.2f}x",
            )
    console.print(table)


if __name__ == "__main__":
    main()
