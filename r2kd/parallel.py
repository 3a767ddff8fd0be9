"""One training step on N processes that computes what one process computes (docs/distributed.md).

Every rank builds the same global batch and views; a wrapped network runs this rank's shard and
returns the whole batch's logits (all-gathered), so the objective and the methods see exactly the
tensors of a one-process run. Outside a multi-process world the wrappers return the network itself.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from r2kd.distributed import gather_rows, local_rows, world
from r2kd.syncbn import sync_batchnorm


class GlobalBatch(nn.Module):
    """Call ``inner`` on this rank's shard of a global batch; return the global batch's output."""

    # A rank sees rows of the concatenated views, not each view's own shard: per-view batch
    # statistics (r2kd.methods.objective.per_view_statistics) cannot be kept apart through it.
    shards_batch = True

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gather_rows(self.inner(local_rows(x)), x.shape[0])


class FrozenGlobalBatch(GlobalBatch):
    # Holds no state of its own: its training flag must not make a frozen eval-mode network look
    # batch dependent to the objective (r2kd.methods.objective.batch_independent).
    def __init__(self, inner: nn.Module) -> None:
        super().__init__(inner)
        self.training = False

    def train(self, mode: bool = True) -> "FrozenGlobalBatch":
        return self  # the frozen network's modes were set by its owner (set_bn_mode)


def for_training(model: nn.Module, device: torch.device) -> nn.Module:
    """The module the objective calls for ``model`` (already on ``device``): ``model`` itself in one
    process; else DDP over a global-BatchNorm ``model``, fed and gathered as a global batch. Call it
    before the optimiser is built (BatchNorm layers are replaced; parameters are kept)."""
    if not world().distributed:
        return model
    sync_batchnorm(model, device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                  # running statistics are identical on every rank (global-batch BN)
                                  broadcast_buffers=False)
    return GlobalBatch(ddp)


def frozen(net: nn.Module | None, device: torch.device, sync_bn: bool) -> nn.Module | None:
    """A frozen network as the objective calls it: on this rank's shard, gathered to the global
    batch; with ``sync_bn`` its train-mode BatchNorm uses the global batch's statistics."""
    if net is None or not world().distributed:
        return net
    if sync_bn:
        sync_batchnorm(net, device)
    return FrozenGlobalBatch(net)
