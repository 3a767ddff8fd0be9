"""BatchNorm mode of a frozen teacher during distillation."""

from __future__ import annotations

from typing import Literal

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

BnMode = Literal["train", "eval"]


def set_bn_mode(model: nn.Module, mode: BnMode) -> nn.Module:
    """Freeze ``model`` and put it in eval mode, except BatchNorm in train mode when ``mode == "train"``.

    The reference release only calls ``eval()`` on the original teacher, so its pruned copy runs
    BatchNorm on batch statistics and keeps updating the running statistics (METHOD.md §5).
    Dropout and everything else stay in eval mode either way, and no parameter requires grad:
    the pruned teacher is never trained, only its BN buffers move.
    """
    if mode not in ("train", "eval"):
        raise ValueError(f"bn mode must be 'train' or 'eval', got {mode!r}")
    model.eval()
    if mode == "train":
        for module in model.modules():
            if isinstance(module, _BatchNorm):
                module.train()
    for param in model.parameters():
        param.requires_grad_(False)
    return model
