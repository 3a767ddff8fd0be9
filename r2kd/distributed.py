"""The process group of a multi-process training run (torchrun, r2kd/launch.py; docs/distributed.md):
who am I, set up and tear down, barrier, and the row sharding and autograd gather the training step
uses. Outside a torchrun world every function is the one-process identity.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

from r2kd.runtime import resolve_device


@dataclass(frozen=True)
class World:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """The one process that writes outputs, resume state and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world() -> World:
    """This process's place in the initialised process group (rank 0 of 1 when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World(rank=0, world_size=1, local_rank=0)
    return World(rank=dist.get_rank(), world_size=dist.get_world_size(),
                 local_rank=int(os.environ.get("LOCAL_RANK", "0")))


@contextlib.contextmanager
def session(device_spec: str = "auto") -> Iterator[World]:
    """Join the torchrun world (env:// rendezvous) for the block, then leave it."""
    backend = "nccl" if resolve_device(device_spec).type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    try:
        yield world()
    finally:
        _host_group.cache_clear()
        dist.destroy_process_group()


def barrier() -> None:
    if world().distributed:
        dist.barrier()


@functools.cache
def _host_group() -> dist.ProcessGroup | None:
    """A gloo group for host-side agreement: None (the default group) when that is gloo already."""
    return None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")


def all_true(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (a collective: every rank must call it). Agreed on the
    host, so asking once per batch never waits for the GPU's queued work (as a CUDA tensor's
    ``.item()`` would)."""
    if not world().distributed:
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int64)
    dist.all_reduce(value, op=dist.ReduceOp.MIN, group=_host_group())
    return bool(value.item())


def sum_over_ranks(t: torch.Tensor) -> None:
    """Sum ``t`` over every rank, in place (a collective: every rank must call it)."""
    if world().distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


def shard_bounds(rows: int, w: World | None = None) -> list[int]:
    """Row boundaries of each rank's contiguous shard of a ``rows``-row global batch: rank r owns
    [b[r], b[r+1]). Equal shards when ``rows`` is a multiple of the world size (config enforces it
    for full batches); a last partial batch is split as evenly as integers allow."""
    w = w or world()
    return [r * rows // w.world_size for r in range(w.world_size + 1)]


def local_rows(x: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a global batch (dim 0): all of it in one process."""
    w = world()
    b = shard_bounds(x.shape[0], w)
    return x[b[w.rank]: b[w.rank + 1]]


class _AllGather(torch.autograd.Function):
    """all_gather of equal-shape tensors, differentiable. Backward: the gradient of every rank's copy
    of the result is summed (all_reduce) and this rank keeps its slice, so a loss computed identically
    on every rank sends each shard N times its gradient; DistributedDataParallel's average over the N
    ranks then gives exactly the one-process gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        w = world()
        ctx.rank, ctx.rows = w.rank, tensor.shape[0]
        out = [torch.empty_like(tensor) for _ in range(w.world_size)]
        dist.all_gather(out, tensor.contiguous())
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows: (ctx.rank + 1) * ctx.rows]


def all_gather_equal(t: torch.Tensor) -> torch.Tensor:
    """The concatenation over ranks of equal-shape ``t`` (differentiable when ``t`` requires grad)."""
    return _AllGather.apply(t) if world().distributed else t


def gather_rows(local: torch.Tensor, rows: int) -> torch.Tensor:
    """The global batch's rows (``rows`` in all) from every rank's shard (:func:`shard_bounds`),
    in order, differentiable. Uneven shards are padded to the largest for the collective."""
    w = world()
    if not w.distributed:
        return local
    b = shard_bounds(rows, w)
    sizes = [hi - lo for lo, hi in zip(b, b[1:])]
    widest = max(sizes)
    if local.shape[0] != sizes[w.rank]:
        raise ValueError(f"rank {w.rank} holds {local.shape[0]} rows, its shard of {rows} has {sizes[w.rank]}")
    padded = local if widest == local.shape[0] else torch.cat(
        [local, local.new_zeros((widest - local.shape[0], *local.shape[1:]))])
    everything = all_gather_equal(padded)
    if widest * w.world_size == rows:
        return everything
    return torch.cat([everything[r * widest: r * widest + n] for r, n in enumerate(sizes)])
