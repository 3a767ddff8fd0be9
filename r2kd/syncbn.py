"""BatchNorm on the statistics of the global batch on any device and backend, gloo included (torch's
``nn.SyncBatchNorm`` refuses CPU tensors; docs/distributed.md). Every rank's per-channel (mean, sum
of squared deviations, count) is all-gathered, differentiably, and merged with Chan et al.'s
pairwise formula (no E[x²] − E[x]² cancellation):

  n = Σ n_r,  μ = Σ n_r μ_r / n,  M2 = Σ (M2_r + n_r (μ_r − μ)²),  σ² = M2 / n.

Output and running statistics are ``nn.BatchNorm``'s on the concatenated batch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from r2kd.distributed import all_gather_equal, world


class SyncBatchNorm(_BatchNorm):
    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-d input (N, C, ...), got {input.dim()}-d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if not (batch_stats and world().distributed):
            return super().forward(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, channels] + [1] * (x.dim() - 2)
        x32 = x.float()
        count = x.numel() // channels
        if count:
            mean_r = x32.mean(dims)
            m2_r = (x32 - mean_r.view(shape)).square().sum(dims)
        else:  # an empty shard (a last batch smaller than the world) contributes nothing
            mean_r = m2_r = x32.new_zeros(channels) + x32.sum() * 0  # keeps the autograd link
        packed = torch.cat([mean_r, m2_r, x32.new_full((1,), float(count))])
        stats = all_gather_equal(packed).view(world().world_size, 2 * channels + 1)
        counts = stats[:, -1:].detach()
        n = counts.sum()
        mean = (counts * stats[:, :channels]).sum(0) / n
        m2 = (stats[:, channels:-1] + counts * (stats[:, :channels] - mean).square()).sum(0)
        if self.training and self.track_running_stats:
            self._update_running(mean.detach(), m2.detach(), n)
        y = (x32 - mean.view(shape)) * torch.rsqrt(m2 / n + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, m2: torch.Tensor, n: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = m2 / (n - 1).clamp(min=1)
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm replaced by :class:`SyncBatchNorm` holding the same
    parameters and buffers (in place for the children; the result for a BatchNorm root)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        return out
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child))
    return module


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Global-batch BatchNorm for ``module`` on ``device``: torch's on CUDA, :class:`SyncBatchNorm` elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return convert_sync_batchnorm(module)
