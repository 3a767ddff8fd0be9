"""Does loading or compute bound an ImageNet-scale run? Images/s of the R2KD training step for
ResNet-34 -> ResNet-18 at 224 px (torchvision definitions, random weights), next to the images/s
of the streaming loader with 0, 2 and 8 workers on a synthetic JPEG tree in the ImageNet layout.

    python benchmarks/bench_imagenet.py                          # CPU: batch 8, 3 steps, 300 JPEGs
    python benchmarks/bench_imagenet.py --device cuda --batch 64 --steps 20 --images 2000

The step is r2kd.train.TrainStep as Trainer.fit runs it with the device's default settings (on
CUDA: the fast path, a CUDA graph), the cutmix view, an l1_unstructured pruned copy of the teacher
in train-mode BatchNorm. "loader / step" > 1 means the loader keeps up with that many workers.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loader import loader_images_per_second, make_jpeg_tree  # noqa: E402

from r2kd import models  # noqa: E402
from r2kd.config import PruneConfig  # noqa: E402
from r2kd.fast.graphs import GraphedStep  # noqa: E402
from r2kd.methods import METHODS  # noqa: E402
from r2kd.methods.objective import DistillObjective  # noqa: E402
from r2kd.optim import SGD  # noqa: E402
from r2kd.pruning import prune_teacher, set_bn_mode  # noqa: E402
from r2kd.runtime import fast_layout, fast_path_enabled, graphs_enabled, resolve_device, seed_everything  # noqa: E402
from r2kd.train import TrainStep  # noqa: E402


def step_images_per_second(device: torch.device, batch: int, steps: int, teacher: str, student: str,
                           size: int, amp: str = "none") -> tuple[float, str]:
    build = lambda n: models.create(n, 1000, in_channels=3, input_size=size).to(device)  # noqa: E731
    torch.manual_seed(0)
    t = set_bn_mode(build(teacher), "eval")
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    p = set_bn_mode(prune_teacher(copy.deepcopy(t), x[:2], PruneConfig()).model, "train")
    s = build(student).train()
    fast = fast_path_enabled("auto", device)
    if fast:
        t, p, s = (fast_layout(m) for m in (t, p, s))
    r2kd = METHODS["r2kd"]
    objective = DistillObjective(method=r2kd(r2kd.Params(aug_view="cutmix")), teacher=t, pruned=p,
                                 view_generator=torch.Generator().manual_seed(0), mean=[0.0] * 3, std=[1.0] * 3,
                                 fast=fast)
    opt = SGD(s.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    step = TrainStep(s, objective, opt, torch.amp.GradScaler(device.type, enabled=False), amp, device)
    if graphs_enabled(fast, device, amp):
        step = GraphedStep(step, batch_size=batch)
    step.begin_epoch(1)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(5 if device.type == "cuda" else 1):  # warm-up (and capture)
        step(x, y, 1)
    times = []
    for _ in range(steps):
        sync()
        began = time.perf_counter()
        step(x, y, 1)
        sync()
        times.append(time.perf_counter() - began)
    return batch / statistics.median(times), step.kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--teacher", default="tv_resnet34")
    parser.add_argument("--student", default="tv_resnet18")
    parser.add_argument("--amp", default="none", choices=["none", "bf16"])
    parser.add_argument("--images", type=int, default=300, help="synthetic train JPEGs for the loader")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 8])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    seed_everything(0, deterministic=True)
    console = Console(width=130)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    console.print(f"torch {torch.__version__}, {name}")
    rate, kind = step_images_per_second(device, args.batch, args.steps, args.teacher, args.student, args.size,
                                        args.amp)
    table = Table(title=f"{args.teacher} -> {args.student}, {args.size} px, batch {args.batch}, {device}: "
                        f"compute vs loading")
    for col in ("what", "images/s", "loader / step"):
        table.add_column(col, justify="right")
    table.add_row(f"R2KD step ({kind}, amp {args.amp}, cutmix view)", f"{rate:,.1f}", "")
    with tempfile.TemporaryDirectory() as tmp:
        root = make_jpeg_tree(Path(tmp) / "tree", args.images, 256, 320)
        prepared = Path(tmp) / "prepared"
        prepared.mkdir()
        for workers in args.workers:
            loader = loader_images_per_second(root, workers, image_size=args.size, batch_size=max(args.batch, 8),
                                              device=args.device, prepared=prepared)
            table.add_row(f"streaming loader, {workers} workers", f"{loader:,.1f}", f"{loader / rate:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
