"""Pruning the trained teacher into the second, noisier teacher of R2KD (METHOD.md §5).

``prune_teacher(model, example_inputs, config)`` makes a pruned deep copy with the method named
in ``config.method``; ``save_pruned`` / ``load_pruned`` store it as tensors plus plain
containers so it loads with ``weights_only=True``; ``set_bn_mode`` freezes it for distillation.
"""

from __future__ import annotations

import torch
from torch import nn

from r2kd.pruning import methods as _methods  # noqa: F401  (fills PRUNERS)
from r2kd.pruning.base import (
    PRUNERS,
    PruneResult,
    PruneStats,
    TeacherPruner,
    build_pruner,
    count_macs,
    count_params,
    nonzero_weight_fraction,
    register_pruner,
)
from r2kd.pruning.bn import set_bn_mode
from r2kd.pruning.config import PruneConfig
from r2kd.pruning.store import load_pruned, save_pruned
from r2kd.pruning.structure import apply_structure, describe_structure, find_classifier


def prune_teacher(
    model: nn.Module, example_inputs: torch.Tensor, config: PruneConfig
) -> PruneResult:
    """A pruned deep copy of ``model``; ``example_inputs`` is a small batch of the data's shape."""
    return build_pruner(config).prune(model, example_inputs)


__all__ = [
    "PRUNERS",
    "PruneConfig",
    "PruneResult",
    "PruneStats",
    "TeacherPruner",
    "apply_structure",
    "build_pruner",
    "count_macs",
    "count_params",
    "describe_structure",
    "find_classifier",
    "load_pruned",
    "nonzero_weight_fraction",
    "prune_teacher",
    "register_pruner",
    "save_pruned",
    "set_bn_mode",
]
