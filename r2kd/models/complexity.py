"""Parameter and multiply-accumulate counts.

MACs are counted with forward hooks on Conv and Linear layers only, from the weight shapes actually
present (so a pruned model is counted as pruned); BatchNorm, activations, pooling, additions and biases
are not counted (the convention of the KD literature's "FLOPs" tables, docs/models.md).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs of one forward pass of a single sample of shape ``(C, H, W)`` (or ``(1, C, H, W)``)."""
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4 or shape[0] != 1:
        raise ValueError(f"input_shape must be (C, H, W) or (1, C, H, W), got {tuple(input_shape)}")

    total = 0

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        # weight[0] is one output unit's fan-in: in/groups * kh * kw for a conv, in for a linear.
        total += (output.numel() // output.shape[0]) * module.weight[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    param = next(model.parameters(), torch.zeros(()))  # the input's device and dtype (CPU float32 if none)
    # Every module's own flag is restored, not the root's: a pruned teacher mixes eval and train-mode BN.
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()  # a single sample cannot go through train-mode BatchNorm
        with torch.no_grad():
            model(torch.zeros(shape, device=param.device, dtype=param.dtype))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.train(training)
    return total


def complexity(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """``{"params", "macs"}`` of ``model`` for one sample of ``input_shape``, as the metrics files record them."""
    return {"params": count_parameters(model), "macs": count_macs(model, input_shape)}
