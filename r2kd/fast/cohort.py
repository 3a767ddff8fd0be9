"""The runs of one (pair, seed) trained in one process, in lockstep, each batch's views and frozen passes
computed once (stage `distill_cohort`; docs/architecture.md); each run gets exactly the tensors it
would compute alone, so it ends bit-identical to the run trained alone (tests/test_cohort.py). One resume
state holds every run's (docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path

import torch

from r2kd.distributed import world
from r2kd.errors import TrainingDiverged
from r2kd.files import save_checkpoint
from r2kd.fast.graphs import GraphedStep
from r2kd.methods.objective import DistillObjective, SharedPasses
from r2kd.runtime import autocast
from r2kd.train import FitResult, Member, Trainer, TrainStep, _say, read_state, run_epochs

STATE_FORMAT = "r2kd-cohort-resume-v1"


class CohortViews:
    """The cohort's view draws as one objective for GraphedStep: each view kind drawn once per step
    from its (shared) generator, by the first run that builds it, and handed to every run of that kind."""

    def __init__(self, objectives: list[DistillObjective]) -> None:
        self.objectives = objectives
        self._static: dict[str, torch.Tensor] | None = None
        self.first_of_view: dict[str | None, DistillObjective] = {}
        for objective in objectives:
            self.first_of_view.setdefault(objective.graph_view(), objective)

    def graph_view(self) -> str | None:
        if None in self.first_of_view:
            return None  # one run's view cannot be captured: the whole cohort stays eager
        views = [v for v in self.first_of_view if v != "none"]
        return "+".join(views) if views else "none"

    def draw_view(self, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        return {f"{view}/{name}": value for view, objective in self.first_of_view.items() if view != "none"
                for name, value in objective.draw_view(shape).items()}

    @property
    def static_draw(self) -> dict[str, torch.Tensor] | None:
        return self._static

    @static_draw.setter
    def static_draw(self, draws: dict[str, torch.Tensor] | None) -> None:
        self._static = draws
        for objective in self.objectives:
            prefix = f"{objective.graph_view()}/"
            objective.static_draw = None if draws is None else {
                name[len(prefix):]: value for name, value in draws.items() if name.startswith(prefix)}


class CohortStep:
    """Every live run's TrainStep on one batch, views and frozen passes shared; ``end_epoch``: one outcome per run."""

    kind = "eager"

    def __init__(self, steps: list[TrainStep], shared: SharedPasses, concurrent: bool | None = None) -> None:
        self.steps, self.shared = steps, shared
        self.device = steps[0].device
        self.objective = CohortViews([s.objective for s in steps])
        # With bf16 on CUDA the students run side by side, one stream each, once the shared passes are
        # done: their small bf16 kernels leave most of a GPU idle (H100: 30.1 -> 20.9 ms for 10 runs); in
        # fp32 it measured 5 % slower (40.8 -> 42.7 ms). Same kernels either way, same numbers.
        if concurrent is None:
            concurrent = self.device.type == "cuda" and steps[0].amp == "bf16"
        self.streams = [torch.cuda.Stream(self.device) for _ in steps] if concurrent and len(steps) > 1 else None

    @property
    def autocast_cache(self) -> bool:
        return self.steps[0].autocast_cache

    @autocast_cache.setter
    def autocast_cache(self, value: bool) -> None:
        for step in self.steps:
            step.autocast_cache = value

    def begin_epoch(self, epoch: int) -> None:
        for step in self.steps:
            step.begin_epoch(epoch)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> None:
        self.shared.clear()
        if self.streams is None:
            for step in self.steps:
                step(x, y, epoch)
        else:
            first = self.steps[0]
            with autocast(self.device, first.amp, cache_enabled=first.autocast_cache):
                for step in self.steps:  # every view and frozen pass, in the order the runs need them
                    step.objective.frozen_passes(x)
            current = torch.cuda.current_stream(self.device)
            for step, stream in zip(self.steps, self.streams):
                stream.wait_stream(current)
                with torch.cuda.stream(stream):
                    step(x, y, epoch)
            for stream in self.streams:
                current.wait_stream(stream)
        self.shared.clear()  # frees the step's logits before the next batch

    def end_epoch(self) -> list[tuple[dict[str, torch.Tensor], int]]:
        return [step.end_epoch() for step in self.steps]


class _Live:
    """Rebuilds the cohort's (graphed) step whenever a run drops out (a diverged loss)."""

    def __init__(self, members: list[Member], shared: SharedPasses, graphs: bool, batch_size: int, backend,
                 concurrent: bool | None) -> None:
        self.members, self.shared, self.concurrent = members, shared, concurrent
        self.graphs, self.batch_size, self.backend = graphs, batch_size, backend
        self.kind = "eager"
        self._live: list[Member] = []
        self._step = None

    def begin_epoch(self, epoch: int) -> None:
        live = [m for m in self.members if m.failed is None]
        if live != self._live:
            self._live = live
            step = CohortStep([m.step for m in live], self.shared, self.concurrent)
            self._step = GraphedStep(step, self.batch_size, backend=self.backend) if self.graphs else step
        self._step.begin_epoch(epoch)
        self.kind = self._step.kind

    def __call__(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> None:
        self._step(x, y, epoch)

    def end_epoch(self):
        self.kind = self._step.kind  # a failed capture turns a graphed cohort eager
        return self._step.end_epoch()


def fit_cohort(trainers: list[Trainer], shared: SharedPasses, state_path: Path, fingerprint: str,
               label: str, concurrent: bool | None = None) -> tuple[list[FitResult | TrainingDiverged], str]:
    """Train ``trainers`` together (their objectives hold ``shared``; their loaders, generators, teachers
    and settings are the cohort's): each run's result or the error that stopped it, and the step kind
    that ran. ``concurrent``: the students on CUDA streams of their own (default: on CUDA with bf16).
    The resume state at ``state_path`` stays, complete, until the caller has written the results."""
    if world().distributed:
        raise ValueError("a cohort runs in one process (cohort_seeds needs runtime.nproc_per_node: 1)")
    first = trainers[0]
    members = [t._start() for t in trainers]
    start_epoch = 0
    state = read_state(state_path, STATE_FORMAT, fingerprint, label,
                       fits=lambda state: len(state.get("members", ())) == len(members))
    if state is not None:
        start_epoch = int(state["epoch"])
        for m, saved in zip(members, state["members"]):
            if "failed" in saved:
                m.failed = TrainingDiverged(saved["failed"])
            else:
                m.trainer.load_state_dict(saved, m.optimizer, m.history)
        _say(f"[green]{label}: resuming after epoch {start_epoch}[/] (state {state_path})")
    for m in members:
        m.begin(start_epoch)
    step = _Live(members, shared, first.graphs, first.train_batches.batch_size, first.graph_backend, concurrent)

    def save(epoch: int) -> None:
        save_checkpoint(state_path, {
            "format": STATE_FORMAT, "fingerprint": fingerprint, "epoch": epoch,
            "members": [{"failed": str(m.failed)} if m.failed is not None
                        else m.trainer.state_dict(m.optimizer, m.history) for m in members],
        })

    outcomes = run_epochs(members, step, start_epoch, first.recipe.epochs, save=save, label=label)
    return outcomes, step.kind
