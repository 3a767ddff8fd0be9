"""What every teacher-pruning method returns, how it is measured, and the registry of methods."""

from __future__ import annotations

import abc
import copy
from dataclasses import asdict, dataclass
from typing import Any, Callable, ClassVar, TypeVar

import torch
from torch import nn

from r2kd.errors import ConfigError
from r2kd.pruning.config import PruneConfig
from r2kd.pruning.structure import weighted_layers


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example_inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one sample, by the zoo's convention (Conv and Linear only).

    Counted on a deep copy: the zoo's counter resets every module's train/eval flag afterwards,
    which would clobber a pruned teacher's mixed BatchNorm modes.
    """
    from r2kd.models import count_macs as zoo_count_macs  # noqa: PLC0415  (optional dependency)

    return int(zoo_count_macs(copy.deepcopy(model), tuple(example_inputs.shape[1:])))


def nonzero_weight_fraction(model: nn.Module) -> float:
    """Fraction of non-zero entries over all Conv and Linear weights together."""
    total = nonzero = 0
    for _, layer in weighted_layers(model):
        total += layer.weight.numel()
        nonzero += int(torch.count_nonzero(layer.weight.detach()))
    return nonzero / total if total else 1.0


@dataclass(frozen=True)
class PruneStats:
    method: str
    ratio: float
    input_shape: list[int]  # one sample (C, H, W); MACs are per sample
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    nonzero_weight_fraction_before: float
    nonzero_weight_fraction_after: float
    seconds: float

    @property
    def params_kept(self) -> float:
        return self.params_after / self.params_before

    @property
    def macs_kept(self) -> float:
        return self.macs_after / self.macs_before

    def as_dict(self) -> dict[str, Any]:
        """Plain ints / floats / strings only: goes into weights-only checkpoints and JSON."""
        out = asdict(self)
        out["params_kept"] = self.params_kept
        out["macs_kept"] = self.macs_kept
        return out


@dataclass(frozen=True)
class PruneResult:
    model: nn.Module
    structure: dict[str, Any]  # see r2kd.pruning.structure.describe_structure
    stats: PruneStats


class TeacherPruner(abc.ABC):
    """Makes a pruned copy of a trained teacher, once, without retraining it.

    ``prune`` never modifies its input: it works on a deep copy and returns it in the same
    train/eval mode and with the same ``requires_grad`` flags as the input.
    """

    name: ClassVar[str]

    def __init__(self, config: PruneConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def prune(self, model: nn.Module, example_inputs: torch.Tensor) -> PruneResult: ...


PRUNERS: dict[str, type[TeacherPruner]] = {}

_P = TypeVar("_P", bound=type[TeacherPruner])


def register_pruner(name: str) -> Callable[[_P], _P]:
    def deco(cls: _P) -> _P:
        if name in PRUNERS:
            raise RuntimeError(f"pruning method {name!r} registered twice")
        cls.name = name
        PRUNERS[name] = cls
        return cls

    return deco


def build_pruner(config: PruneConfig) -> TeacherPruner:
    try:
        cls = PRUNERS[config.method]
    except KeyError:
        raise ConfigError(
            f"prune.method: unknown method {config.method!r}; choose one of {sorted(PRUNERS)}"
        ) from None
    return cls(config)
