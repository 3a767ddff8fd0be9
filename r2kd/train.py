"""The training loop of teachers and students: SGD with step decay, per-epoch evaluation, a NaN guard,
and resume from the last completed epoch (state keyed by params, inputs, seed, code; docs/reliability.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from r2kd.config import TrainRecipe
from r2kd.distributed import barrier, sum_over_ranks, world
from r2kd.errors import CheckpointError, TrainingDiverged
from r2kd.evaluation import evaluate
from r2kd.files import load_checkpoint, save_checkpoint
from r2kd.fast.graphs import GraphedStep
from r2kd.optim import SGD
from r2kd.runtime import autocast

# objective(model, images, labels, epoch) -> named loss terms; the loss is their sum.
Objective = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, int], dict[str, torch.Tensor]]

console = Console(stderr=True, soft_wrap=True)  # log lines stay whole in files and narrow terminals


def cross_entropy_objective(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
    return {"ce": F.cross_entropy(model(x), y)}


class TrainStep:
    """One optimisation step and the epoch's bookkeeping (per-term loss sums, the first step whose loss
    was not finite), all on the device, no host sync: every tensor it updates is updated in place, so
    that the step can be replayed as a CUDA graph (r2kd.fast.graphs.GraphedStep)."""

    kind = "eager"

    def __init__(self, model: torch.nn.Module, objective: Objective, optimizer: SGD,
                 scaler: torch.amp.GradScaler, amp: str, device: torch.device) -> None:
        self.model, self.objective, self.optimizer, self.scaler = model, objective, optimizer, scaler
        self.amp, self.device = amp, device
        self.term_sums: dict[str, torch.Tensor] = {}
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.step_index = torch.zeros((), dtype=torch.long, device=device)
        # Inside a CUDA graph autocast must not cache casts across replays.
        self.autocast_cache = True

    def begin_epoch(self, epoch: int) -> None:
        for total in self.term_sums.values():
            total.zero_()
        self.first_bad.fill_(-1)
        self.step_index.zero_()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> None:
        with autocast(self.device, self.amp, cache_enabled=self.autocast_cache):
            terms = self.objective(self.model, x, y, epoch)
        loss = sum(terms.values())
        bad = ~torch.isfinite(loss.detach())
        self.first_bad.copy_(torch.where(bad & (self.first_bad < 0), self.step_index, self.first_bad))
        self.step_index.add_(1)
        self.optimizer.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        for name, value in terms.items():
            if name not in self.term_sums:
                self.term_sums[name] = torch.zeros((), dtype=torch.float32, device=self.device)
            self.term_sums[name].add_(value.detach().float())

    def end_epoch(self) -> tuple[dict[str, torch.Tensor], int]:
        """Per-term sums of the epoch and the 0-based index of its first non-finite step (-1: none)."""
        return dict(self.term_sums), int(self.first_bad)


def lr_at(recipe: TrainRecipe, epoch: int) -> float:
    """Step decay by `gamma` at each milestone (epochs from 1) as MultiStepLR; computed: no scheduler to resume."""
    passed = sum(1 for m in recipe.milestones if epoch > m)
    return recipe.lr * recipe.gamma**passed


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_top1: float
    best_epoch: int
    last: dict[str, float]
    train_seconds: float
    resumed_from_epoch: int = 0


@dataclass
class Trainer:
    """Fits ``model`` with ``objective``; ``modules_to_save`` are extra stateful modules (e.g. a
    pruned teacher with train-mode BatchNorm) whose state must survive a resume."""

    model: torch.nn.Module
    recipe: TrainRecipe
    train_batches: object  # r2kd.data.loader.BatchIterator (train mode, seeded)
    test_batches: object  # r2kd.data.loader.BatchIterator (eval mode)
    objective: Objective
    generators: dict[str, torch.Generator]  # every seeded random stream the run draws from
    state_path: Path
    fingerprint: str
    label: str
    amp: str = "none"
    modules_to_save: dict[str, torch.nn.Module] = field(default_factory=dict)
    graphs: bool = False  # replay full-batch steps as CUDA graphs (r2kd.fast.graphs; runtime.fast_path on CUDA)
    graph_backend: object | None = None  # r2kd.fast.graphs backend; None: real CUDA graphs (tests pass a CPU stand-in)
    step_kind: str = field(default="eager", init=False)  # what ran: eager | cuda-graph | ... (provenance)
    # What the objective calls instead of ``model`` (r2kd.parallel.for_training's DDP); ``model`` is scored and saved.
    forward_model: torch.nn.Module | None = None

    def fit(self) -> FitResult:
        member = self._start()
        step = member.step
        # One process only: the multi-process step all-gathers logits between ranks (r2kd.parallel).
        if self.graphs and world().world_size == 1:
            step = GraphedStep(step, batch_size=self.train_batches.batch_size, backend=self.graph_backend)
        start_epoch = self._resume(member.optimizer, member.history)
        member.begin(start_epoch)

        def save(epoch: int) -> None:
            # Every rank holds the same state (DDP keeps the replicas equal): rank 0 writes it, the
            # others wait, so no rank runs ahead of a state a restart would resume from.
            if world().is_main:
                self.write_state(epoch, self.state_dict(member.optimizer, member.history))
            barrier()

        (outcome,) = run_epochs([member], step, start_epoch, self.recipe.epochs, save=save, label=self.label, solo=True)
        self.step_kind = step.kind  # a failed capture turns a graphed run eager
        assert isinstance(outcome, FitResult)
        return outcome

    def _start(self) -> "Member":
        """The optimiser and the eager step of this run, before any resume."""
        device, r = next(self.model.parameters()).device, self.recipe
        optimizer = SGD(self.model.parameters(), lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)
        scaler = torch.amp.GradScaler(device.type, enabled=self.amp == "fp16" and device.type == "cuda")
        forward = self.forward_model if self.forward_model is not None else self.model
        step = TrainStep(forward, self.objective, optimizer, scaler, self.amp, device)
        return Member(self, optimizer, step)

    # --- resume state -------------------------------------------------------------------------
    def write_state(self, epoch: int, state: dict) -> None:
        save_checkpoint(self.state_path,
                        {"format": "r2kd-resume-v1", "fingerprint": self.fingerprint, "epoch": epoch, **state})

    def state_dict(self, optimizer: SGD, history: list[dict]) -> dict:
        """Everything a resume restores: weights, optimiser, every random stream, frozen modules' state."""
        return {
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generators": {name: g.get_state() for name, g in self.generators.items()},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "modules": {name: m.state_dict() for name, m in self.modules_to_save.items()},
            "history": history,
        }

    def load_state_dict(self, state: dict, optimizer: SGD, history: list[dict]) -> None:
        self.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for name, generator in self.generators.items():
            generator.set_state(state["generators"][name])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        for name, module in self.modules_to_save.items():
            module.load_state_dict(state["modules"][name])
        history.extend(state["history"])

    def _resume(self, optimizer: SGD, history: list[dict]) -> int:
        state = read_state(self.state_path, "r2kd-resume-v1", self.fingerprint, self.label)
        if state is None or int(state["epoch"]) > self.recipe.epochs:
            return 0
        epoch = int(state["epoch"])
        self.load_state_dict(state, optimizer, history)
        _say(f"[green]{self.label}: resuming after epoch {epoch}[/] (state {self.state_path})")
        return epoch

    def discard_state(self) -> None:
        """Called once the stage's outputs are written: the result supersedes the resume state."""
        if world().is_main:
            self.state_path.unlink(missing_ok=True)


@dataclass
class Member:
    """One run inside :func:`run_epochs`: its trainer, optimiser and step, and its record so far."""

    trainer: Trainer
    optimizer: SGD
    step: TrainStep
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] | None = None
    train_seconds: float = 0.0
    resumed_from_epoch: int = 0
    failed: TrainingDiverged | None = None

    def begin(self, resumed_from_epoch: int) -> None:
        """Called once the history is restored (or left empty)."""
        self.resumed_from_epoch = resumed_from_epoch
        self.best = max(self.history, key=lambda row: row["test_top1"], default=None)
        self.train_seconds = sum(row["seconds"] for row in self.history)

    def result(self) -> "FitResult | TrainingDiverged":
        if self.failed is not None:
            return self.failed
        assert self.best is not None
        return FitResult(history=self.history, best_top1=self.best["test_top1"], best_epoch=int(self.best["epoch"]),
                         last=self.history[-1], train_seconds=self.train_seconds,
                         resumed_from_epoch=self.resumed_from_epoch)


def run_epochs(members: list[Member], step, start_epoch: int, epochs: int, *, save: Callable[[int], None],
               label: str, solo: bool = False) -> list["FitResult | TrainingDiverged"]:
    """The epoch loop of one run (``solo``: ``step.end_epoch`` gives its outcome) or of a cohort in
    lockstep (r2kd.fast.cohort: one outcome per live member). ``save(epoch)`` writes the resume state
    after each epoch. A member whose loss stops being finite is dropped (``solo``: raised at once,
    before its state is saved) and returned as the error."""
    train_batches = members[0].trainer.train_batches
    steps_per_epoch = len(train_batches)
    main = world().is_main  # only rank 0 of a multi-process run reports and writes

    def record(m: Member, epoch: int, term_sums: dict, scores: dict, seconds: float) -> None:
        row = {"epoch": epoch, "lr": lr_at(m.trainer.recipe, epoch),
               **{f"train_{k}": float(v) / steps_per_epoch for k, v in term_sums.items()},
               "test_top1": scores["top1"], "test_top5": scores["top5"], "test_loss": scores["nll"], "seconds": seconds}
        m.train_seconds += seconds
        m.history.append(row)
        if m.best is None or row["test_top1"] > m.best["test_top1"]:
            m.best = row
        if main:
            t, best = m.trainer, m.best
            progress.console.print(
                f"[dim]{t.label}[/] epoch {epoch}/{t.recipe.epochs}  "
                f"loss {sum(float(v) for v in term_sums.values()) / steps_per_epoch:.4f}  "
                f"top-1 {row['test_top1']:.2f}  (best {best['test_top1']:.2f} @ {best['epoch']})  {seconds:.1f}s")

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True, disable=not main) as progress:
        task = progress.add_task(label, total=epochs * steps_per_epoch, completed=start_epoch * steps_per_epoch)
        for epoch in range(start_epoch + 1, epochs + 1):
            live = [m for m in members if m.failed is None]
            if not live:
                break
            began = time.perf_counter()
            for m in live:
                m.optimizer.lr = lr_at(m.trainer.recipe, epoch)
                m.trainer.model.train()
            step.begin_epoch(epoch)
            for x, y in train_batches:
                step(x, y, epoch)
                progress.advance(task)
            outcomes = [step.end_epoch()] if solo else step.end_epoch()
            trained = time.perf_counter() - began
            for m, (term_sums, bad_step) in zip(live, outcomes):
                member_began = time.perf_counter()
                t = m.trainer
                if bad_step >= 0:
                    if not solo:  # its last good state is the cohort's, whose other runs go on
                        kept = "the run leaves its cohort, whose other runs go on"
                    elif epoch > 1:
                        kept = f"the last good state (epoch {epoch - 1}) is kept in {t.state_path}"
                    else:
                        kept = "no earlier good state exists (it diverged in the first epoch), so nothing was kept"
                    m.failed = TrainingDiverged(
                        f"{t.label}: the loss became NaN or infinite at epoch {epoch}, step {bad_step + 1}; "
                        f"{kept}. Lower the learning rate or check the data.")
                    if solo:
                        raise m.failed
                    progress.console.print(f"[red]{m.failed}[/]")
                    continue
                w = world()
                scores = evaluate(t.model, t.test_batches, t.amp, part=(w.rank, w.world_size),
                                  reduce=sum_over_ranks if w.distributed else None)
                # A run's seconds: the shared training pass split evenly, plus its own evaluation.
                seconds = trained / len(live) + time.perf_counter() - member_began
                record(m, epoch, term_sums, scores, seconds)
            save(epoch)
    return [m.result() for m in members]


def read_state(path: Path, fmt: str, fingerprint: str, label: str,
               fits: Callable[[dict], bool] = lambda state: True) -> dict | None:
    """The ``fmt`` resume state at ``path`` if it ``fits`` and has ``fingerprint``; else None (said why)."""
    if not path.exists():
        return None
    try:
        state = load_checkpoint(path)
        if not isinstance(state, dict) or state.get("format") != fmt or not fits(state):
            raise CheckpointError(f"{path} is not a {fmt} resume state of {label}")
    except CheckpointError as exc:
        _say(f"[yellow]ignoring unusable resume state[/]: {exc}")
        return None
    if state["fingerprint"] != fingerprint:
        _say(f"[yellow]{label}: params, inputs or code changed since the interrupted run; starting over[/]")
        return None
    return state


def _say(message: str) -> None:
    if world().is_main:  # every rank of a multi-process run would say the same
        console.print(message)
