"""The training step replayed as one CUDA graph (``runtime.fast_path`` on CUDA): a step of these small
models is hundreds of launches the GPU waits on. What a graph needs and how the step provides it:
docs/architecture.md ("How the fast paths keep their numbers"). ``EagerReplayBackend`` stands in for
CUDA on the CPU, so that everything but the capture itself is tested without a GPU.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import Tensor

WARMUP_STEPS = 3


class CudaGraphBackend:
    """A backend: ``warmup(fn)`` runs the step before capture, ``capture(fn)`` returns what ``replay()``s
    it, ``upload(dst, src)`` copies a draw into its static tensor."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.side = torch.cuda.Stream(device)

    def warmup(self, fn: Callable[[], None]) -> None:
        current = torch.cuda.current_stream(self.device)
        self.side.wait_stream(current)
        with torch.cuda.stream(self.side):
            fn()
        current.wait_stream(self.side)

    def capture(self, fn: Callable[[], None]) -> torch.cuda.CUDAGraph:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph

    def upload(self, dst: Tensor, src: Tensor) -> None:
        # Pinned + non_blocking: the CPU never waits for the GPU between steps. The caching host
        # allocator keeps a pinned block alive until its copy has run, so reuse is safe.
        dst.copy_(src.pin_memory() if src.device.type == "cpu" else src, non_blocking=True)


class EagerReplayBackend:
    """A CUDA graph's contract without CUDA: capture records, replay runs (tests, CPU)."""

    def __init__(self) -> None:
        self.captures = self.replays = 0

    def warmup(self, fn: Callable[[], None]) -> None:
        fn()

    def capture(self, fn: Callable[[], None]) -> _Recorded:
        self.captures += 1
        return _Recorded(self, fn)

    def upload(self, dst: Tensor, src: Tensor) -> None:
        dst.copy_(src)


class _Recorded:
    def __init__(self, backend: EagerReplayBackend, fn: Callable[[], None]) -> None:
        self.backend, self.fn = backend, fn

    def replay(self) -> None:
        self.backend.replays += 1
        self.fn()


class GraphedStep:
    """Wraps an :class:`r2kd.train.TrainStep`; same interface, same numbers, one launch per step. An
    objective with a view has ``graph_view()`` (its view; None if it cannot be captured, e.g.
    autoaugment: the run stays eager), ``draw_view(shape)`` (the view's random numbers) and
    ``static_draw`` (where it reads their device copies); a plain function objective has no view."""

    def __init__(self, step, batch_size: int, backend: CudaGraphBackend | EagerReplayBackend | None = None) -> None:
        self.step = step
        self.batch_size = batch_size
        self.backend = backend if backend is not None else CudaGraphBackend(step.device)
        self.view = step.objective.graph_view() if hasattr(step.objective, "graph_view") else "none"
        self.graph: torch.cuda.CUDAGraph | _Recorded | None = None
        self.static: dict[str, Tensor] = {}
        self.warmups_left = WARMUP_STEPS
        self.eager_reason = None if self.view is not None else "its augmented view cannot be captured"
        step.autocast_cache = False

    @property
    def kind(self) -> str:
        return "cuda-graph" if self.eager_reason is None else "eager"

    def begin_epoch(self, epoch: int) -> None:
        self.graph = None  # the learning rate and epoch-dependent factors are constants in a graph
        self.step.begin_epoch(epoch)

    def end_epoch(self) -> tuple[dict[str, Tensor], int]:
        return self.step.end_epoch()

    def __call__(self, x: Tensor, y: Tensor, epoch: int) -> None:
        objective = self.step.objective
        if self.eager_reason is not None or x.shape[0] != self.batch_size:
            if hasattr(objective, "static_draw"):
                objective.static_draw = None  # the eager view draws for itself
            self.step(x, y, epoch)
            return
        draw = objective.draw_view(tuple(x.shape)) if self.view != "none" else {}
        if not self.static:  # the tensors the graph reads: this batch and the view's draws are copied in
            self.static = {"x": torch.empty_like(x), "y": torch.empty_like(y),
                           **{name: torch.empty_like(value, device=x.device) for name, value in draw.items()}}
        self.static["x"].copy_(x)
        self.static["y"].copy_(y)
        for name, value in draw.items():
            self.backend.upload(self.static[name], value)
        if hasattr(objective, "static_draw"):
            objective.static_draw = {name: self.static[name] for name in draw}

        def run() -> None:
            self.step(self.static["x"], self.static["y"], epoch)

        if self.warmups_left > 0:
            self.warmups_left -= 1
            self.backend.warmup(run)
            return
        if self.graph is None:
            try:
                self.graph = self.backend.capture(run)
            except Exception as exc:  # noqa: BLE001 - any capture failure means "stay eager"
                self.eager_reason = f"capture failed: {type(exc).__name__}: {exc}"
                warnings.warn(f"CUDA graph capture failed; this run continues eagerly ({self.eager_reason})")
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                run()  # the same draws, eagerly: the step is not lost
                return
        self.graph.replay()
