"""This project's training step against a reference step written the plain way the official R2KD
code writes it, in ONE process on one device, interleaved (reference, project, reference, ...) so
that load from other processes hits both alike.

    python benchmarks/bench_step.py                         # CPU, both shapes, all methods
    python benchmarks/bench_step.py --device cuda           # the same on a GPU
    python benchmarks/bench_step.py --shapes default --steps 30
    python benchmarks/bench_step.py --device cuda --reference-mode both   # both references (the default)

The reference step: separate forwards of student, teacher and pruned teacher on each view, the
pruned copy made with torch.nn.utils.prune.l1_unstructured (10 %, made permanent) and kept in
train-mode BatchNorm, the cutmix view, torch.optim.SGD (momentum 0.9, wd 5e-4, nesterov False), the
loss terms written inline, and a host read of the loss every step (``loss.item()``). The project's
step: DistillObjective + r2kd.optim.SGD as r2kd.train.Trainer uses them (non-finite guard and term
sums on the device). Random weights: speed only. "speed-up" = reference ms / project ms.

Which reference (``--reference-mode``; on CUDA only, where the switches matter):

- ``deterministic``: the reference step under ``runtime.deterministic: true``'s switches, as the
  project's rows run (``torch.use_deterministic_algorithms(True, warn_only=True)``,
  ``torch.backends.cudnn.benchmark = False``). The ratios in docs/performance.md up to 2026-11-27
  divide by this one.
- ``official``: the reference step as the official R2KD code runs it: ``torch.backends.cudnn.benchmark
  = True``, deterministic algorithms off (cuDNN and cuBLAS may pick non-deterministic, faster kernels).
  The switches are set around each official step and restored after it, so the project's rows and
  the deterministic reference keep their settings. One difference is left: CUBLAS_WORKSPACE_CONFIG
  (:4096:8, needed by the deterministic side) is process-wide and read when cuBLAS starts, so the
  official reference runs with it too; the official code leaves it unset.
- ``both`` (default): both, interleaved in the same loop, and every ratio printed against each.

On the CPU the two coincide (no cuDNN; the CPU kernels are deterministic and seed_everything sets
nothing there): one reference is timed.

"project" is the step with the settings' defaults as the distill stage resolves them on this
device. On the CPU with --threads 1 the reference is also timed with 2 intra-op threads (torch's
own default on a 2-core machine, as the official code runs).

The "stage path" rows run the real Trainer (BatchIterator on random uint8 data, one epoch of
``--stage-steps`` steps, one evaluation pass), so a win inside the step is not lost around it. On
CUDA (r2kd) its time is given as a ratio to the same number of project steps. On the CPU, for each
method with a frozen network, the loop is run ``--stage-repeats`` times (median), against the
reference step.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from r2kd import models
from r2kd.config import PruneConfig, TrainRecipe
from r2kd.data.loader import BatchIterator
from r2kd.methods import METHODS
from r2kd.methods.objective import DistillObjective, batch_independent
from r2kd.optim import SGD
from r2kd.pruning import prune_teacher, set_bn_mode
from r2kd.runtime import autocast, fast_layout, resolve_device, seed_everything
from r2kd.fast.graphs import GraphedStep
from r2kd.train import Trainer, TrainStep
from r2kd.workers import usable_cores

REFERENCES = {  # --reference-mode: the row label of each reference
    "deterministic": "reference, deterministic (cudnn.benchmark off, deterministic algorithms)",
    "official": "reference, official settings (cudnn.benchmark on, non-deterministic)",
    "cpu": "reference",  # on the CPU the two coincide
}

SHAPES = {  # name: teacher, student, channels, side, classes
    "cifar100": ("resnet32x4", "resnet8x4", 3, 32, 100),
    "default": ("wrn_16_2", "resnet8", 1, 8, 10),
}
T, W, ALPHA, BETA = 4.0, 0.7, 2.0, 2.0
console = Console(width=140)


# --- the reference, written plainly ------------------------------------------------------------
def ref_cutmix(x: torch.Tensor) -> torch.Tensor:
    lam = np.random.beta(1.0, 1.0)
    index = torch.randperm(x.size(0), device=x.device)
    h, w = x.size(2), x.size(3)
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = np.random.randint(h), np.random.randint(w)
    y1, y2 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
    x1, x2 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
    out = x.clone()
    out[:, :, y1:y2, x1:x2] = x[index, :, y1:y2, x1:x2]
    return out


def ref_corr_dist(a, b):
    return 1.0 - ((a * b).sum(1).abs() / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)).mean()


def ref_rank(p_s, p_t):
    r_s = p_s.argsort(1).argsort(1).float()
    r_t = p_t.argsort(1).argsort(1).float()
    r_s, r_t = r_s - r_s.mean(1, keepdim=True), r_t - r_t.mean(1, keepdim=True)
    rho = (r_s * r_t).sum(1) / (r_s.norm(dim=1) * r_t.norm(dim=1) + 1e-8)
    return BETA * (1.0 - rho.mean())


def ref_r2kd_view(z_s, z_t, z_p):
    tgt = W * z_t + (1 - W) * z_p
    p_s, p_t = F.softmax(z_s / T, 1), F.softmax(tgt / T, 1)
    value = ALPHA * T * T * (ref_corr_dist(p_s, p_t) + ref_corr_dist(p_s.t(), p_t.t()))
    return value + ref_rank(F.softmax(z_s / T, 1), F.softmax(tgt / T, 1))


def ref_pearson_dist(a, b):
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return 1.0 - ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)).mean()


def ref_dkd(z_s, z_t, y, alpha=1.0, beta=8.0):
    gt = F.one_hot(y, z_s.shape[1]).bool()
    p_s, p_t = F.softmax(z_s / T, 1), F.softmax(z_t / T, 1)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * ~gt).sum(1)], 1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * ~gt).sum(1)], 1)
    tckd = F.kl_div(torch.log(b_s), b_t, reduction="sum") * T * T / y.shape[0]
    log_ps2 = F.log_softmax(z_s / T - 1000.0 * gt, 1)
    p_t2 = F.softmax(z_t / T - 1000.0 * gt, 1)
    nckd = F.kl_div(log_ps2, p_t2, reduction="sum") * T * T / y.shape[0]
    return alpha * tckd + beta * nckd


def reference_terms(method: str, z_s, z_t, z_p, y, clean: bool = True):
    """The method's loss on one view, written inline (CE on the clean view only, METHOD.md §4)."""
    loss = F.cross_entropy(z_s, y) * (0.1 if method == "kd" else 1.0) if clean else z_s.new_zeros(())
    if method == "kd":
        loss = loss + 0.9 * F.kl_div(F.log_softmax(z_s / T, 1), F.softmax(z_t / T, 1), reduction="batchmean") * T * T
    elif method == "dist":
        p_s, p_t = F.softmax(z_s / T, 1), F.softmax(z_t / T, 1)
        loss = loss + T * T * (2.0 * ref_pearson_dist(p_s, p_t) + 2.0 * ref_pearson_dist(p_s.t(), p_t.t()))
    elif method == "dkd":
        loss = loss + ref_dkd(z_s, z_t, y)
    elif method == "r2kd":
        loss = loss + ref_r2kd_view(z_s, z_t, z_p)
    return loss


def reference_step(method, student, teacher, pruned, opt, x, y):
    z_s = student(x)
    z_t = z_p = None
    if method != "ce":
        with torch.no_grad():
            z_t = teacher(x)
            z_p = pruned(x) if method == "r2kd" else None
    loss = reference_terms(method, z_s, z_t, z_p, y)
    if method == "r2kd":
        x_aug = ref_cutmix(x)
        z_s_aug = student(x_aug)
        with torch.no_grad():
            z_t_aug, z_p_aug = teacher(x_aug), pruned(x_aug)
        loss = loss + ref_r2kd_view(z_s_aug, z_t_aug, z_p_aug)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


# --- the project's step, as the Trainer runs it -------------------------------------------------
def project_step_fn(objective, student, opt, x, y, amp="none", graphs=False):
    """r2kd.train.TrainStep (what Trainer.fit calls per batch); with ``graphs`` wrapped in
    r2kd.graphs.GraphedStep, as the fast path does on CUDA (warm-up, capture, then one replay)."""
    device = x.device
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    step = TrainStep(student, objective, opt, scaler, amp, device)
    if graphs:
        step = GraphedStep(step, batch_size=x.shape[0])
    step.begin_epoch(30)

    def run():
        step(x, y, 30)

    run.step = step
    return run


def with_threads(n: int, fn):
    def run():
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)
    return run


class reference_settings:
    """The global switches of one reference mode around a step, restored after it (CUDA only)."""

    def __init__(self, mode: str):
        self.mode = mode

    def __enter__(self):
        self.saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
                      torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
        official = self.mode == "official"
        torch.backends.cudnn.benchmark = official
        if official:
            torch.backends.cudnn.deterministic = False
        torch.use_deterministic_algorithms(not official, warn_only=True)

    def __exit__(self, *exc):
        benchmark, cudnn_deterministic, enabled, warn_only = self.saved
        torch.backends.cudnn.benchmark = benchmark
        torch.backends.cudnn.deterministic = cudnn_deterministic
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def with_reference_settings(mode: str, fn, device):
    if device.type != "cuda":
        return fn

    def run():
        with reference_settings(mode):
            return fn()
    return run


def reference_modes(args, device) -> list[str]:
    if device.type != "cuda":  # the same settings on the CPU: one reference
        return ["cpu"]
    return ["deterministic", "official"] if args.reference_mode == "both" else [args.reference_mode]


def ratio_cells(times: dict, value: float, modes: list[str]) -> list[str]:
    return [f"{times[REFERENCES[m]] / value:.2f}x" for m in modes]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict, steps: int, warmup: int, device) -> dict[str, float]:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {k: [] for k in fns}
    for _ in range(steps):
        for k, fn in fns.items():
            sync(device)
            began = time.perf_counter()
            fn()
            sync(device)
            samples[k].append(time.perf_counter() - began)
    return {k: statistics.median(v) for k, v in samples.items()}


def reference_pruned(teacher):
    import torch.nn.utils.prune as prune

    copy_ = copy.deepcopy(teacher)
    for m in copy_.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            prune.l1_unstructured(m, "weight", amount=0.1)
            prune.remove(m, "weight")
    copy_.eval()
    for m in copy_.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.train()
    for p in copy_.parameters():
        p.requires_grad_(False)
    return copy_


class TwoPrunedPasses(DistillObjective):
    """The fast path with the pruned teacher's views in two passes (as before per_view_statistics)."""

    def _batch_views(self, net, x, v) -> bool:
        return batch_independent(net) and super()._batch_views(net, x, v)


def bench_shape(shape: str, args, device) -> list[tuple]:
    t_name, s_name, ch, side, classes = SHAPES[shape]
    torch.manual_seed(0)
    build = lambda n: models.create(n, classes, in_channels=ch, input_size=side).to(device)  # noqa: E731
    teacher = set_bn_mode(build(t_name), "eval")
    x = torch.randn(args.batch, ch, side, side, device=device)
    y = torch.randint(0, classes, (args.batch,), device=device)
    ref_pr = reference_pruned(teacher)
    proj_pr = set_bn_mode(prune_teacher(copy.deepcopy(teacher), x[:2], PruneConfig()).model, "train")
    student0 = build(s_name).train()
    steps = args.steps if shape == "default" else args.steps_large
    rows = []
    for method in args.methods:
        cls = METHODS[method]
        s_ref, s_proj = copy.deepcopy(student0), copy.deepcopy(student0)
        opt_ref = torch.optim.SGD(s_ref.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=False)
        opt_proj = SGD(s_proj.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        params = cls.Params(**({"aug_view": "cutmix"} if method == "r2kd" else {}))
        nets = [name for name, used in (("teacher", cls.uses_teacher), ("pruned", cls.uses_pruned_teacher)) if used]

        def plain_objective():  # the distill stage's objective on the CPU layout
            return DistillObjective(method=cls(params), teacher=teacher, pruned=proj_pr,
                                    view_generator=torch.Generator().manual_seed(0), mean=[0.0] * ch, std=[1.0] * ch)

        objective = plain_objective()
        modes = reference_modes(args, device)
        fns = {}
        for mode in modes:  # each reference its own copy of the student and optimiser
            s_m, opt_m = (s_ref, opt_ref) if mode == modes[0] else (copy.deepcopy(student0), None)
            if opt_m is None:
                opt_m = torch.optim.SGD(s_m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=False)
            fns[REFERENCES[mode]] = with_reference_settings(
                mode, lambda s_m=s_m, opt_m=opt_m: reference_step(method, s_m, teacher, ref_pr, opt_m, x, y), device)
        fns["project"] = project_step_fn(objective, s_proj, opt_proj, x, y)
        extra = {}

        def fast_objective(kind=DistillObjective):  # fast-path copies of the frozen networks
            fast_t, fast_p = (fast_layout(copy.deepcopy(m)) for m in (teacher, proj_pr))
            return kind(method=cls(params), teacher=fast_t, pruned=fast_p, view_generator=torch.Generator().manual_seed(0),
                        mean=[0.0] * ch, std=[1.0] * ch, fast=True)

        def step_of(obj, fast=True, **kwargs):  # a fresh copy of the student and its optimiser
            student = fast_layout(copy.deepcopy(student0)) if fast else copy.deepcopy(student0)
            opt = SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
            return project_step_fn(obj, student, opt, x, y, **kwargs)

        if device.type == "cuda":  # the CUDA default: fast_path auto = channels_last + batched views + CUDA graph
            graph_obj = fast_objective()
            fns["project, CUDA default (fast path: graph)"] = step_of(graph_obj, graphs=True)
            if method == "r2kd":
                # the CUDA default before the pruned teacher's views were batched (2026-11-27)
                fns["project, CUDA default, pruned views in two passes"] = step_of(fast_objective(TwoPrunedPasses),
                                                                                   graphs=True)
                fns["project, CUDA default + amp=bf16"] = step_of(graph_obj, amp="bf16", graphs=True)
        if device.type == "cpu" and args.threads == 1 and usable_cores() >= 2:
            # The official code leaves torch at its default: as many intra-op threads as cores.
            fns["reference, 2 intra-op threads"] = with_threads(2, fns[REFERENCES[modes[0]]])
        if method == "r2kd":  # the opt-in variants, measured in the same loop
            fns["project amp=bf16"] = step_of(objective, fast=False, amp="bf16")
            fast_obj = fast_objective()
            fns["project fast_path=always"] = step_of(fast_obj)
            fns["project fast_path=always amp=bf16"] = step_of(fast_obj, amp="bf16")
        times = interleaved(fns, steps, max(args.warmup, 5 if device.type == "cuda" else 0), device)
        kinds = {k: fn.step.kind for k, fn in fns.items() if hasattr(fn, "step")}
        if any(v != "cuda-graph" for k, v in kinds.items() if "CUDA default" in k):
            console.print(f"[red]{shape}/{method}: a graphed step fell back to eager[/]: {kinds}")
        for k, v in times.items():
            extra[k] = v
            rows.append((shape, method, k, v * 1e3, ratio_cells(times, v, modes)))
        summary = "project, CUDA default (fast path: graph)" if device.type == "cuda" else "project"
        for k in (summary, "project, CUDA default + amp=bf16"):
            if k in times:
                refs = ", ".join(f"{times[REFERENCES[m]] / times[k]:.2f}x the {m} reference ({times[REFERENCES[m]] * 1e3:.1f} ms)"
                                 for m in modes)
                console.print(f"{shape} {method}: {k} {times[k] * 1e3:.1f} ms = {refs}")
        if method == "r2kd" and device.type == "cuda":
            stage = stage_path(shape, args, device, student0, graph_obj,
                               times["project, CUDA default (fast path: graph)"], graphs=True)
            rows.append((*stage[:4], [f"step/stage-step {stage[4]:.2f}"] + [""] * (len(modes) - 1)))
        elif device.type == "cpu" and nets:
            loop = cpu_loop_row(shape, method, args, device, student0, times[REFERENCES[modes[0]]], plain_objective)
            rows.append((*loop[:4], [f"{loop[4]:.2f}x (reference step / loop step)"]))
    return rows


def cpu_loop_row(shape, method, args, device, student0, reference_step_seconds, new_objective) -> tuple:
    """The real Trainer loop on the CPU, run ``--stage-repeats`` times (median). Speed-up: the
    reference STEP's time over the loop's time per step, loader and evaluation included (so it
    understates the loop's gain over a reference loop)."""
    per_step = [stage_path(shape, args, device, student0, new_objective(), 1.0)[3] / 1e3
                for _ in range(args.stage_repeats)]
    what = f"stage path ({args.stage_steps} steps + eval of {4 * args.batch}), per step"
    return (shape, method, what, statistics.median(per_step) * 1e3, reference_step_seconds / statistics.median(per_step),
            "loop")


def stage_path(shape, args, device, student0, objective, step_seconds, graphs=False) -> tuple:
    """N steps of the real Trainer loop (loader, step, per-epoch bookkeeping, one evaluation pass)."""
    _, _, ch, side, classes = SHAPES[shape]
    n = args.stage_steps * args.batch
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, ch, side, side), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    common = dict(batch_size=args.batch, mean=[0.5] * ch, std=[0.25] * ch, device=device)
    train = BatchIterator(images, labels, train=True, generator=g, crop_padding=side // 8, hflip=True, **common)
    test = BatchIterator(images[: 4 * args.batch], labels[: 4 * args.batch], train=False, generator=None, **common)
    with tempfile.TemporaryDirectory() as tmp:
        model = fast_layout(copy.deepcopy(student0)) if graphs else copy.deepcopy(student0)
        trainer = Trainer(model=model, recipe=TrainRecipe(epochs=1, batch_size=args.batch, lr=0.01,
                          momentum=0.9, weight_decay=5e-4), train_batches=train, test_batches=test,
                          objective=objective, generators={"data": g}, state_path=Path(tmp) / "state.pt",
                          fingerprint="bench", label="bench", graphs=graphs)
        sync(device)
        began = time.perf_counter()
        trainer.fit()
        sync(device)
        wall = time.perf_counter() - began
    per_step = wall / args.stage_steps
    what = f"stage path ({args.stage_steps} steps + eval of {4 * args.batch}{', ' + trainer.step_kind if graphs else ''})"
    return (shape, "r2kd", what + ", per step", per_step * 1e3, step_seconds / per_step)


def epoch_rows(args, device) -> list[tuple]:
    """One CIFAR-100-sized R2KD epoch with evaluation (50,000 train and 10,000 test images, 3x32x32,
    100 classes, resnet32x4 -> resnet8x4, batch 64; random pixels: the arithmetic of real ones):
    the plain reference loop (the same in-memory loader, reference_step, a plain evaluation loop)
    against r2kd's Trainer.fit with the device's default settings."""
    t_name, s_name, ch, side, classes = SHAPES["cifar100"]
    torch.manual_seed(0)
    build = lambda n: models.create(n, classes, in_channels=ch, input_size=side).to(device)  # noqa: E731
    teacher = set_bn_mode(build(t_name), "eval")
    student0 = build(s_name).train()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.epoch_train, ch, side, side), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, classes, (args.epoch_train,), generator=g)
    common = dict(batch_size=args.batch, mean=[0.5] * ch, std=[0.25] * ch, device=device)
    test = BatchIterator(images[: args.epoch_test], labels[: args.epoch_test], train=False, generator=None, **common)
    rows = []

    # the reference: plain loop, one host read per step, plain evaluation; once per reference mode
    ref_pr = reference_pruned(teacher)
    modes = reference_modes(args, device)
    ref_seconds = {}
    for mode in modes:
        s_ref = copy.deepcopy(student0)
        opt = torch.optim.SGD(s_ref.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=False)
        train = BatchIterator(images, labels, train=True, generator=torch.Generator().manual_seed(1), crop_padding=4,
                              hflip=True, **common)
        with reference_settings(mode) if device.type == "cuda" else contextlib.nullcontext():
            sync(device)
            began = time.perf_counter()
            for x, y in train:
                reference_step("r2kd", s_ref, teacher, ref_pr, opt, x, y)
            s_ref.eval()
            correct = 0
            with torch.no_grad():
                for x, y in test:
                    correct += (s_ref(x).argmax(1) == y).sum().item()
            s_ref.train()
            sync(device)
        ref_seconds[mode] = time.perf_counter() - began
    for mode in modes:
        rows.append(("cifar100 epoch", "r2kd", f"{REFERENCES[mode]} loop ({len(train)} steps + eval of {args.epoch_test})",
                     ref_seconds[mode], [f"{ref_seconds[m] / ref_seconds[mode]:.2f}x" for m in modes]))

    fast = device.type == "cuda"
    proj_pr = set_bn_mode(prune_teacher(copy.deepcopy(teacher), images[:2].to(device).float(), PruneConfig()).model,
                          "train")
    for amp in ("none", "bf16") if fast else ("none",):  # bf16: the opt-in, on the GPU only
        t, p, model = (fast_layout(copy.deepcopy(m)) if fast else copy.deepcopy(m) for m in (teacher, proj_pr, student0))
        objective = DistillObjective(method=METHODS["r2kd"](METHODS["r2kd"].Params(aug_view="cutmix")), teacher=t,
                                     pruned=p, view_generator=torch.Generator().manual_seed(0), mean=[0.5] * ch,
                                     std=[0.25] * ch, fast=fast)
        data_g = torch.Generator().manual_seed(1)
        train = BatchIterator(images, labels, train=True, generator=data_g, crop_padding=4, hflip=True, **common)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(model=model, recipe=TrainRecipe(epochs=1, batch_size=args.batch, lr=0.05, momentum=0.9,
                              weight_decay=5e-4), train_batches=train, test_batches=test, objective=objective,
                              generators={"data": data_g}, state_path=Path(tmp) / "state.pt", fingerprint="bench",
                              label="epoch", graphs=fast, amp=amp)
            sync(device)
            began = time.perf_counter()
            trainer.fit()
            sync(device)
            seconds = time.perf_counter() - began
        settings = "default settings" if amp == "none" else "default + amp=bf16 (opt-in)"
        rows.append(("cifar100 epoch", "r2kd", f"r2kd Trainer.fit, {settings} ({trainer.step_kind})", seconds,
                     [f"{ref_seconds[m] / seconds:.2f}x" for m in modes]))
        console.print(f"epoch: Trainer.fit, {settings}: {seconds:.2f} s = "
                      + ", ".join(f"{ref_seconds[m] / seconds:.2f}x the {m} reference loop ({ref_seconds[m]:.2f} s)"
                                  for m in modes))
    return rows


def cpu_flags() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "lscpu unavailable"
    model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")
    flags = sorted({f for f in out.split() if f.startswith(("avx512_bf16", "amx"))})
    return f"{model}; bf16 hardware: {', '.join(flags) if flags else 'none (no avx512_bf16 / AMX)'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (runtime.threads; default 1)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--methods", nargs="+", default=["r2kd", "ce", "kd", "dist", "dkd"], choices=list(METHODS))
    parser.add_argument("--steps", type=int, default=30, help="interleaved samples per row, embedded default shape")
    parser.add_argument("--steps-large", type=int, default=5, help="... at CIFAR-100 shape")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--stage-steps", type=int, default=10)
    parser.add_argument("--stage-repeats", type=int, default=3, help="CPU: runs of each loop row (median)")
    parser.add_argument("--nondeterministic", action="store_true",
                        help="runtime.deterministic: false (on CUDA: cuDNN may pick non-deterministic kernels)")
    parser.add_argument("--reference-mode", default="both", choices=["deterministic", "official", "both"],
                        help="the reference's CUDA switches: deterministic (runtime.deterministic's), official "
                             "(cudnn.benchmark on, deterministic algorithms off, as the official R2KD code), or both "
                             "(default); on the CPU they coincide and one reference is timed")
    parser.add_argument("--epoch", action="store_true", help="also time one CIFAR-100-sized epoch (GPU)")
    parser.add_argument("--epoch-train", type=int, default=50_000)
    parser.add_argument("--epoch-test", type=int, default=10_000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":  # the deterministic reference needs it, before cuBLAS starts
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    seed_everything(0, deterministic=not args.nondeterministic)  # as a stage does: the project's rows
    modes = reference_modes(args, device)
    header = f"torch {torch.__version__}, {device}, {args.threads} threads, {usable_cores()} usable cores"
    header += ", project: deterministic kernels" if not args.nondeterministic else ", project: non-deterministic kernels"
    header += "; references: " + " and ".join(REFERENCES[m] for m in modes) if device.type == "cuda" else \
        "; one reference (CPU: the official and deterministic settings coincide)"
    header += f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else f", CPU: {cpu_flags()}"
    console.print(header)
    rows = [r for shape in args.shapes for r in bench_shape(shape, args, device)]
    ref_cols = [f"speed-up vs {m} reference" if device.type == "cuda" else "speed-up vs reference" for m in modes]
    table = Table(title=f"train step, batch {args.batch}: median ms (interleaved); speed-up = reference / row")
    for col in ("shape", "method", "step", "ms / step", *ref_cols):
        table.add_column(col)
    for shape, method, kind, ms, cells in rows:
        table.add_row(shape, method, kind, f"{ms:.1f}", *cells)
    console.print(table)
    if args.epoch:
        epoch = epoch_rows(args, device)
        table = Table(title=f"one CIFAR-100-sized epoch with evaluation, batch {args.batch}")
        for col in ("what", "method", "run", "seconds", *ref_cols):
            table.add_column(col)
        for what, method, kind, seconds, cells in epoch:
            table.add_row(what, method, kind, f"{seconds:.2f}", *cells)
        console.print(table)
    console.print("shapes: " + "; ".join(f"{k}: {v[0]} -> {v[1]}, {v[2]}x{v[3]}x{v[3]}, {v[4]} classes"
                                         for k, v in SHAPES.items() if k in args.shapes))


if __name__ == "__main__":
    main()
