"""The ``prune`` section of params.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PruneConfig(BaseModel):
    """How the second (pruned) teacher is made from the trained teacher (METHOD.md §5).

    ``l1_unstructured`` is what the reference release does; ``torch_pruning`` is this project's
    structured alternative, which gives a genuinely smaller and faster second teacher.
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["torch_pruning", "l1_unstructured"] = "torch_pruning"
    # Fraction of channels (torch_pruning) or of weights per layer (l1_unstructured) removed.
    ratio: float = Field(0.1, gt=0.0, lt=1.0)
    # BatchNorm mode of the pruned teacher during distillation: the reference keeps it in train
    # mode (batch statistics), because it only puts the original teacher in eval mode.
    bn_mode: Literal["train", "eval"] = "train"
    # Norm of the channel-magnitude importance used by torch_pruning (ignored by l1_unstructured).
    importance_p: Literal[1, 2] = 2
