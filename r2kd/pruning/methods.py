"""The two ways of making the pruned second teacher (METHOD.md §5, docs/prune.md), keyed by ``prune.method``:
each is a plain function ``(deep copy, example inputs, config) -> pruned copy`` in :data:`PRUNE_METHODS`.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import prune as torch_prune

from r2kd.config import PruneConfig
from r2kd.errors import ConfigError
from r2kd.models import classifier_of
from r2kd.models.complexity import count_macs, count_parameters
from r2kd.models.structure import describe_structure, weighted_layers


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
        """Plain ints / floats / strings only: goes into weights-only model files and JSON."""
        return {**asdict(self), "params_kept": self.params_kept, "macs_kept": self.macs_kept}


@dataclass(frozen=True)
class PruneResult:
    model: nn.Module
    structure: dict[str, Any]  # see r2kd.models.structure.describe_structure
    stats: PruneStats


def prune_teacher(model: nn.Module, example_inputs: torch.Tensor, config: PruneConfig) -> PruneResult:
    """A pruned deep copy of ``model`` (``model`` untouched; the copy keeps its train/eval modes and ``requires_grad``
    flags), never retrained; ``example_inputs`` is a small batch of the data's shape."""
    if config.method not in PRUNE_METHODS:
        raise ConfigError(f"prune.method: unknown method {config.method!r}; choose one of {sorted(PRUNE_METHODS)}")
    start = time.perf_counter()
    pruned = PRUNE_METHODS[config.method](copy.deepcopy(model), example_inputs, config)
    seconds = time.perf_counter() - start
    sample = tuple(example_inputs.shape[1:])
    stats = PruneStats(
        method=config.method, ratio=config.ratio, input_shape=list(sample),
        params_before=count_parameters(model), params_after=count_parameters(pruned),
        macs_before=count_macs(model, sample), macs_after=count_macs(pruned, sample),
        nonzero_weight_fraction_before=nonzero_weight_fraction(model),
        nonzero_weight_fraction_after=nonzero_weight_fraction(pruned), seconds=seconds,
    )
    return PruneResult(model=pruned, structure=describe_structure(pruned), stats=stats)


def nonzero_weight_fraction(model: nn.Module) -> float:
    """Fraction of non-zero entries over all Conv and Linear weights together."""
    weights = [layer.weight.detach() for _, layer in weighted_layers(model)]
    total = sum(w.numel() for w in weights)
    return sum(int(torch.count_nonzero(w)) for w in weights) / total if total else 1.0


def prune_l1_unstructured(model: nn.Module, example_inputs: torch.Tensor, config: PruneConfig) -> nn.Module:
    """The reference: zero the ``ratio`` smallest-magnitude weights of every Conv and Linear layer, masks folded
    into the weights (no pruning hooks left; docs/prune.md)."""
    with torch.no_grad():
        for _, layer in weighted_layers(model):
            torch_prune.l1_unstructured(layer, name="weight", amount=config.ratio)
            torch_prune.remove(layer, "weight")
    return model


def prune_torch_pruning(model: nn.Module, example_inputs: torch.Tensor, config: PruneConfig) -> nn.Module:
    """Structured channel pruning with torch-pruning's dependency graph and magnitude importance, per layer group,
    classifier kept (docs/prune.md); checked against the channel-masked original (:func:`_check_channel_pruning`)."""
    original = copy.deepcopy(model)  # unpruned, for the check
    try:
        classifier = classifier_of(model)
    except TypeError:
        raise ConfigError(f"cannot find the classifier of {type(model).__name__}: it has no nn.Linear layer") from None
    permuting = _permuting_ops(model, example_inputs)
    if permuting:
        raise _unsupported(model, f"its forward permutes tensor dimensions ({', '.join(permuting)}), e.g. a channel "
                                  "shuffle, which torch-pruning's dependency graph cannot follow")
    reference = _eval_forward(model, example_inputs)
    removed = _prune_channels(model, example_inputs, classifier, config)
    _check_channel_pruning(original, model, example_inputs, reference, removed)
    return model


PRUNE_METHODS: dict[str, Callable[[nn.Module, torch.Tensor, PruneConfig], nn.Module]] = {
    "torch_pruning": prune_torch_pruning, "l1_unstructured": prune_l1_unstructured}


# Relative tolerance of the check that the structurally pruned network computes exactly what the
# original computes with the removed channels zeroed. Float32 summation-order noise is ~1e-6;
# a dependency torch-pruning got wrong (e.g. through a channel shuffle) gives errors of order 1.
_EQUIVALENCE_RTOL = 1e-3


@contextlib.contextmanager
def _kept_modes_and_grads(model: nn.Module) -> Iterator[None]:
    """Restore every module's train/eval flag and every parameter's requires_grad on exit (keyed by name, not
    identity: torch-pruning swaps parameter objects but keeps module names)."""
    modes = {name: m.training for name, m in model.named_modules()}
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        yield
    finally:
        for name, module in model.named_modules():
            if name in modes:
                module.train(modes[name])
        for name, param in model.named_parameters():
            if name in grads:
                param.requires_grad_(grads[name])


@torch.no_grad()
def _eval_forward(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with _kept_modes_and_grads(model):
        model.eval()
        return model(inputs)


def _unsupported(model: nn.Module, reason: str) -> ConfigError:
    return ConfigError(f"prune.method: structured pruning (torch_pruning) is not supported for "
                       f"{type(model).__name__}: {reason}. Use prune.method: l1_unstructured for this teacher.")


# Autograd nodes of operations that move channels to other positions. torch-pruning's dependency
# graph does not model them: it gets such networks wrong, fails, or (ShuffleNetV2) runs for ever,
# so they are refused before it is called. (``TBackward0``, a Linear's weight transpose, is fine.)
_PERMUTING_NODES = ("TransposeBackward", "PermuteBackward")


def _permuting_ops(model: nn.Module, inputs: torch.Tensor) -> list[str]:
    """Names of the autograd nodes in one forward pass that permute tensor dimensions."""
    with _kept_modes_and_grads(model), torch.enable_grad():
        model.eval()
        for param in model.parameters():
            param.requires_grad_(True)
        output = model(inputs)
    seen: set[object] = set()  # the nodes themselves: ids of freed wrappers could be reused
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(child for child, _ in node.next_functions)
    return sorted({type(node).__name__ for node in seen if type(node).__name__.startswith(_PERMUTING_NODES)})


def _channel_coupled(module: nn.Module) -> bool:
    """Layers whose input and output channels are the same channels (BN, depthwise conv)."""
    return isinstance(module, _BatchNorm) or (
        isinstance(module, nn.modules.conv._ConvNd) and module.groups == module.in_channels == module.out_channels)


def rounded_kept(current: int, n_pruned: int, round_to: int) -> int:
    """Channels a group keeps with ``round_to``: rounded down to a multiple, never below one multiple (torch-pruning's
    own ``BasePruner._round_to`` has no floor: 16 -> 14 -> 0); a group narrower than ``round_to`` is not rounded."""
    kept = current - n_pruned
    return kept if current < round_to else max(kept - kept % round_to, round_to)


class _Pruner(tp.pruner.BasePruner):
    """torch-pruning's BasePruner with :func:`rounded_kept` as its channel rounding."""

    def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
        return current_channels - rounded_kept(current_channels, n_pruned, round_to)


def _prune_channels(model: nn.Module, inputs: torch.Tensor, classifier: nn.Module,
                    config: PruneConfig) -> dict[str, set[int]]:
    """Prune ``model``; return the output channels removed from each layer, by name."""
    names = {id(m): name for name, m in model.named_modules()}
    removed: dict[str, set[int]] = {}
    with _kept_modes_and_grads(model):
        # The dependency graph is read off the autograd graph of one forward pass: with frozen
        # parameters (a typical teacher) there is none and torch-pruning silently prunes nothing.
        for param in model.parameters():
            param.requires_grad_(True)
        try:
            with torch.enable_grad():
                pruner = _Pruner(model, inputs, importance=tp.importance.MagnitudeImportance(p=config.importance_p),
                                 pruning_ratio=config.ratio, ignored_layers=[classifier], round_to=config.round_to)
                for group in pruner.step(interactive=True):
                    if not any(len(idxs) for _, idxs in group):
                        continue  # round_to kept the whole group
                    for dep, idxs in group:
                        module = dep.target.module
                        name = names.get(id(module))
                        is_out = pruner.DG.is_out_channel_pruning_fn(dep.handler)
                        if name is not None and (is_out or _channel_coupled(module)):
                            # torch-pruning hands out its own index objects; ``.idx`` is the position in this layer
                            removed.setdefault(name, set()).update(int(getattr(i, "idx", i)) for i in idxs)
                    group.prune()
        except Exception as exc:  # torch-pruning fails in many ways on graphs it cannot follow
            raise _unsupported(model, f"torch-pruning failed: {type(exc).__name__}: {exc}") from exc
    return removed


def _check_channel_pruning(original: nn.Module, pruned: nn.Module, inputs: torch.Tensor, reference: torch.Tensor,
                           removed: dict[str, set[int]]) -> None:
    """Refuse results that are not a sound channel pruning of ``original``: the original with every removed output
    channel zeroed must compute the pruned network's logits. This catches couplings torch-pruning cannot see
    (channel shuffles, stored channel counts used in reshapes) instead of handing distillation a scrambled teacher."""
    if not removed:
        raise _unsupported(original, "torch-pruning found no channel it could remove")
    try:
        out = _eval_forward(pruned, inputs)
    except Exception as exc:
        raise _unsupported(original, f"the pruned network no longer runs ({type(exc).__name__}: {exc})") from exc
    if out.shape != reference.shape:
        raise _unsupported(original, f"the pruned network outputs {tuple(out.shape)}, not {tuple(reference.shape)}")
    for name, idxs in removed.items():  # the hooks stay on ``original``, a private copy
        index = torch.tensor(sorted(idxs), dtype=torch.long)

        def zero_channels(_m: nn.Module, _inp: object, output: torch.Tensor, index=index):
            output = output.clone()
            output[:, index.to(output.device)] = 0
            return output

        original.get_submodule(name).register_forward_hook(zero_channels)
    expected = _eval_forward(original, inputs)
    error = float((out - expected).abs().max())
    scale = float(expected.abs().max().clamp_min(1e-12))
    if error > _EQUIVALENCE_RTOL * scale:
        raise _unsupported(original, "torch-pruning's dependency graph missed a channel coupling (the pruned network "
                                     f"differs from the channel-masked original by {error / scale:.2g} relative; "
                                     "typically a channel shuffle or a reshape to a stored channel count)")
