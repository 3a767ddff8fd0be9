"""What the paper's matrix costs in GPU time with ``cohort_seeds`` (stage distill_cohort), against the official
code: every run of one (pair, seed) of the CIFAR-100 preset, in ONE process on one device, interleaved.

    python benchmarks/bench_cohort.py --device cuda            # the figure in docs/performance.md
    python benchmarks/bench_cohort.py --device cpu --shape default --steps 5   # a dry run

The preset's matrix is 4 pairs x 5 methods (ce, kd, dist, dkd, r2kd) x 2 augments (none, cutmix) x
3 seeds. Every (pair, seed) has the same 10 runs, each the same number of steps, so the matrix's
GPU-hours relative to the official code are the ratio of one (pair, seed)'s summed step times:

- reference: each of the 10 runs' steps written plainly, as benchmarks/bench_step.py's reference
  (separate forwards of student, teacher and pruned teacher on each view, an l1_unstructured
  pruned copy in train-mode BatchNorm, torch.optim.SGD, ``loss.item()`` every step), one run per
  process as the official code runs them; summed. ``--reference-mode`` as in bench_step.py: on CUDA
  with runtime.deterministic's switches (``deterministic``), with the official code's
  (``official``: cudnn.benchmark on, deterministic algorithms off), or both (default), each ratio
  printed against each;
- project, alone: each run's step as its own stage runs it (the device's default: on CUDA the
  fast path, one CUDA graph per step); summed;
- project, cohort: the 10 runs' steps as ONE r2kd.cohort.CohortStep, views and frozen passes
  computed once (on CUDA: one CUDA graph for all 10, the students on one stream each), as
  a cohort stage runs them; on CUDA also with the students in turn (one stream), and
  with ``amp: bf16`` (opt-in).

Shape: resnet32x4 -> resnet8x4 at CIFAR-100 shape (the preset's first pair, its costliest teacher),
batch 64, random weights and pixels (speed only); DKD's beta 8 as the preset sets it for this pair.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_step import (SHAPES, interleaved, project_step_fn, ref_cutmix,  # noqa: E402
                                   reference_pruned, reference_terms)
from r2kd import models  # noqa: E402
from r2kd.fast.cohort import CohortStep  # noqa: E402
from r2kd.config import PruneConfig  # noqa: E402
from r2kd.fast.graphs import GraphedStep  # noqa: E402
from r2kd.methods import METHODS  # noqa: E402
from r2kd.methods.objective import DistillObjective, SharedPasses  # noqa: E402
from r2kd.optim import SGD  # noqa: E402
from r2kd.pruning import prune_teacher, set_bn_mode  # noqa: E402
from r2kd.runtime import fast_layout, resolve_device, seed_everything  # noqa: E402
from r2kd.train import TrainStep  # noqa: E402

from benchmarks.bench_step import REFERENCES, reference_modes, with_reference_settings  # noqa: E402

console = Console(width=140)
METHOD_NAMES = ("ce", "kd", "dist", "dkd", "r2kd")
AUGMENTS = ("none", "cutmix")
EPOCH = 30  # past DKD's warm-up


def reference_step(method: str, augment: str, student, teacher, pruned, opt, x, y) -> float:
    """One run's step, the official way: every network on every view, separately."""
    views = [x] if method == "ce" or augment == "none" else [x, ref_cutmix(x)]  # ce has no term on a view
    loss = 0.0
    for i, v in enumerate(views):
        z_s = student(v)
        with torch.no_grad():
            z_t = teacher(v) if method != "ce" else None
            z_p = pruned(v) if method == "r2kd" else None
        loss = loss + reference_terms(method, z_s, z_t, z_p, y, clean=i == 0)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def objective_for(method: str, augment: str, teacher, pruned, views: dict, ch: int, fast: bool,
                  shared: SharedPasses | None, pair_beta: float = 8.0) -> DistillObjective:
    cls = METHODS[method]
    extra = {"beta": pair_beta} if method == "dkd" else {}
    params = cls.Params(aug_view=augment, **extra)
    view = cls(params).aug_view
    generator = views.setdefault(view, torch.Generator().manual_seed(0)) if views is not None \
        else torch.Generator().manual_seed(0)
    return DistillObjective(method=cls(params), teacher=teacher, pruned=pruned, view_generator=generator,
                            mean=[0.0] * ch, std=[1.0] * ch, fast=fast, shared=shared)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--shape", default="cifar100", choices=list(SHAPES))
    parser.add_argument("--steps", type=int, default=30, help="interleaved samples per row")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reference-mode", default="both", choices=["deterministic", "official", "both"],
                        help="the reference's CUDA switches (see bench_step.py); on the CPU one reference")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    seed_everything(0, deterministic=True)
    modes = reference_modes(args, device)
    t_name, s_name, ch, side, classes = SHAPES[args.shape]
    torch.manual_seed(0)
    build = lambda n: models.create(n, classes, in_channels=ch, input_size=side).to(device)  # noqa: E731
    teacher = set_bn_mode(build(t_name), "eval")
    x = torch.randn(64, ch, side, side, device=device)
    y = torch.randint(0, classes, (64,), device=device)
    ref_pruned = reference_pruned(teacher)
    proj_pruned = set_bn_mode(prune_teacher(copy.deepcopy(teacher), x[:2], PruneConfig()).model, "train")
    student0 = build(s_name).train()
    fast = device.type == "cuda"  # the device's default (runtime.fast_path: auto)
    f_teacher, f_pruned = ((fast_layout(copy.deepcopy(m)) for m in (teacher, proj_pruned)) if fast
                           else (teacher, proj_pruned))
    runs = [(m, a) for m in METHOD_NAMES for a in AUGMENTS]

    def sgd(model):
        return SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def student():
        s = copy.deepcopy(student0)
        return fast_layout(s) if fast else s

    fns = {}
    for mode in modes:
        for m, a in runs:
            s_ref = copy.deepcopy(student0)
            opt = torch.optim.SGD(s_ref.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=False)
            fns[f"{REFERENCES[mode]} {m}/{a}"] = with_reference_settings(
                mode, lambda m=m, a=a, s=s_ref, o=opt: reference_step(m, a, s, teacher, ref_pruned, o, x, y), device)
    for m, a in runs:
        s = student()
        fns[f"project alone {m}/{a}"] = project_step_fn(objective_for(m, a, f_teacher, f_pruned, None, ch, fast, None),
                                                        s, sgd(s), x, y, graphs=fast)

    def cohort(amp: str, concurrent: bool | None = None):
        shared, views = SharedPasses(), {}
        steps = []
        for m, a in runs:
            s = student()
            steps.append(TrainStep(s, objective_for(m, a, f_teacher, f_pruned, views, ch, fast, shared), sgd(s),
                                   torch.amp.GradScaler(device.type, enabled=False), amp, device))
        step = CohortStep(steps, shared, concurrent=concurrent)
        if fast:
            step = GraphedStep(step, batch_size=x.shape[0])
        step.begin_epoch(EPOCH)

        def run():
            step(x, y, EPOCH)

        run.step, run.shared = step, shared
        return run

    if fast:  # the students one after another, instead of one CUDA stream each
        fns["project cohort, students in turn"] = cohort("none", concurrent=False)
    fns["project cohort (cohort_seeds)"] = cohort("none")
    if fast:
        fns["project cohort + amp=bf16, students in turn"] = cohort("bf16", concurrent=False)
    fns["project cohort + amp=bf16 (opt-in)"] = cohort("bf16")

    console.print(f"torch {torch.__version__}, {device}"
                  + (f", {torch.cuda.get_device_name(device)}" if fast else f", {args.threads} threads")
                  + f", project: deterministic kernels; {t_name} -> {s_name}, {ch}x{side}x{side}, {classes} classes,"
                  + " batch 64; references: " + " and ".join(REFERENCES[m] for m in modes))
    times = interleaved(fns, args.steps, args.warmup, device)
    kinds = {k: fn.step.kind for k, fn in fns.items() if hasattr(fn, "step")}
    if fast and any(v != "cuda-graph" for v in kinds.values()):
        console.print(f"[red]a graphed step fell back to eager[/]: {kinds}")
    shared = fns["project cohort (cohort_seeds)"].shared
    console.print(f"cohort: {shared.computed} views / frozen passes computed, {shared.reused} reused (eager calls only)")

    name = {"cpu": "reference"}
    ref_total = {mode: sum(times[f"{REFERENCES[mode]} {m}/{a}"] for m, a in runs) for mode in modes}
    alone_total = sum(times[f"project alone {m}/{a}"] for m, a in runs)
    table = Table(title="one step of each run of a (pair, seed): median ms, interleaved")
    table.add_column("run")
    for mode in modes:
        table.add_column(name.get(mode, mode + " reference"), justify="right")
    table.add_column("project alone", justify="right")
    for mode in modes:
        table.add_column(f"speed-up vs {name.get(mode, mode + ' reference')}", justify="right")
    for m, a in runs:
        r = [times[f"{REFERENCES[mode]} {m}/{a}"] for mode in modes]
        p = times[f"project alone {m}/{a}"]
        table.add_row(f"{m}/{a}", *(f"{v * 1e3:.1f}" for v in r), f"{p * 1e3:.1f}", *(f"{v / p:.2f}x" for v in r))
    console.print(table)
    table = Table(title="the matrix: GPU time of a (pair, seed)'s 10 runs per step (= the matrix's GPU-hours ratio)")
    table.add_column("how")
    table.add_column("ms per step of all 10 runs", justify="right")
    for mode in modes:
        table.add_column(f"GPU-hours vs official code, {name.get(mode, mode + ' reference')}", justify="right")
    for mode in modes:
        table.add_row(f"official code ({REFERENCES[mode]}), one run at a time", f"{ref_total[mode] * 1e3:.1f}",
                      *(f"{ref_total[mode] / ref_total[o]:.3f}" for o in modes))
    rows = [("project, each run alone (default)", alone_total)]
    rows += [(k, times[k]) for k in ("project cohort, students in turn", "project cohort (cohort_seeds)",
                                     "project cohort + amp=bf16, students in turn", "project cohort + amp=bf16 (opt-in)")
             if k in times]
    for k, v in rows:
        table.add_row(k, f"{v * 1e3:.1f}", *(f"{v / ref_total[mode]:.3f} (1/{ref_total[mode] / v:.1f})" for mode in modes))
    console.print(table)
    for k, v in rows:
        console.print(f"matrix: {k}: {v * 1e3:.1f} ms = " + ", ".join(
            f"1/{ref_total[mode] / v:.1f} of the {name.get(mode, mode + ' reference')}'s GPU time "
            f"({ref_total[mode] * 1e3:.1f} ms)" for mode in modes))


if __name__ == "__main__":
    main()
