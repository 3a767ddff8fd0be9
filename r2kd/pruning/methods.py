"""The two ways of making the pruned second teacher (METHOD.md §5)."""

from __future__ import annotations

import contextlib
import copy
import time
from typing import Iterator

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import prune as torch_prune

from r2kd.errors import ConfigError
from r2kd.pruning.base import (
    PruneResult,
    PruneStats,
    TeacherPruner,
    count_macs,
    count_params,
    nonzero_weight_fraction,
    register_pruner,
)
from r2kd.pruning.structure import describe_structure, find_classifier, weighted_layers

# Relative tolerance of the check that the structurally pruned network computes exactly what the
# original computes with the removed channels zeroed. Float32 summation-order noise is ~1e-6;
# a dependency torch-pruning got wrong (e.g. through a channel shuffle) gives errors of order 1.
_EQUIVALENCE_RTOL = 1e-3


@contextlib.contextmanager
def _kept_modes_and_grads(model: nn.Module) -> Iterator[None]:
    """Restore every module's train/eval flag and every parameter's requires_grad on exit.

    Keyed by name, not identity: torch-pruning swaps parameter objects but keeps module names.
    """
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


def _stats(
    method: str,
    ratio: float,
    before: nn.Module,
    after: nn.Module,
    inputs: torch.Tensor,
    seconds: float,
) -> PruneStats:
    return PruneStats(
        method=method,
        ratio=ratio,
        input_shape=list(inputs.shape[1:]),
        params_before=count_params(before),
        params_after=count_params(after),
        macs_before=count_macs(before, inputs[:1]),
        macs_after=count_macs(after, inputs[:1]),
        nonzero_weight_fraction_before=nonzero_weight_fraction(before),
        nonzero_weight_fraction_after=nonzero_weight_fraction(after),
        seconds=seconds,
    )


def _unsupported(model: nn.Module, reason: str) -> ConfigError:
    return ConfigError(
        f"prune.method: structured pruning (torch_pruning) is not supported for "
        f"{type(model).__name__}: {reason}. Use prune.method: l1_unstructured for this teacher."
    )


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
    found: set[str] = set()
    seen: set[object] = set()  # the nodes themselves: ids of freed wrappers could be reused
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__.startswith(_PERMUTING_NODES):
            found.add(type(node).__name__)
        stack.extend(child for child, _ in node.next_functions)
    return sorted(found)


def _plain(idxs: list) -> list[int]:
    # torch-pruning hands out its own index objects; ``.idx`` is the position in this layer.
    return [int(getattr(i, "idx", i)) for i in idxs]


def _channel_coupled(module: nn.Module) -> bool:
    """Layers whose input and output channels are the same channels (BN, depthwise conv)."""
    if isinstance(module, _BatchNorm):
        return True
    return (
        isinstance(module, nn.modules.conv._ConvNd)
        and module.groups == module.in_channels == module.out_channels
    )


@register_pruner("torch_pruning")
class TorchPruningPruner(TeacherPruner):
    """Structured channel pruning with torch-pruning's dependency graph and magnitude importance.

    Every layer group loses ``ratio`` of its channels (no global ranking), so parameters and MACs
    fall by about 1 − (1 − ratio)². The classifier is ignored, so its outputs (the classes) stay.
    """

    def prune(self, model: nn.Module, example_inputs: torch.Tensor) -> PruneResult:
        start = time.perf_counter()
        pruned = copy.deepcopy(model)
        classifier = find_classifier(pruned)
        permuting = _permuting_ops(pruned, example_inputs)
        if permuting:
            raise _unsupported(
                model,
                f"its forward permutes tensor dimensions ({', '.join(permuting)}), e.g. a channel "
                "shuffle, which torch-pruning's dependency graph cannot follow",
            )
        reference = _eval_forward(pruned, example_inputs)
        removed = self._prune_in_place(pruned, example_inputs, classifier)
        seconds = time.perf_counter() - start
        self._check(model, pruned, example_inputs, reference, removed)
        stats = _stats(self.name, self.config.ratio, model, pruned, example_inputs, seconds)
        return PruneResult(model=pruned, structure=describe_structure(pruned), stats=stats)

    def _prune_in_place(
        self, model: nn.Module, inputs: torch.Tensor, classifier: nn.Module
    ) -> dict[str, set[int]]:
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
                    pruner = tp.pruner.BasePruner(
                        model,
                        inputs,
                        importance=tp.importance.MagnitudeImportance(p=self.config.importance_p),
                        pruning_ratio=self.config.ratio,
                        ignored_layers=[classifier],
                    )
                    for group in pruner.step(interactive=True):
                        for dep, idxs in group:
                            module = dep.target.module
                            name = names.get(id(module))
                            is_out = pruner.DG.is_out_channel_pruning_fn(dep.handler)
                            if name is not None and (is_out or _channel_coupled(module)):
                                removed.setdefault(name, set()).update(_plain(idxs))
                        group.prune()
            except Exception as exc:  # torch-pruning fails in many ways on graphs it cannot follow
                raise _unsupported(model, f"torch-pruning failed: {type(exc).__name__}: {exc}") from exc
        return removed

    def _check(
        self,
        original: nn.Module,
        pruned: nn.Module,
        inputs: torch.Tensor,
        reference: torch.Tensor,
        removed: dict[str, set[int]],
    ) -> None:
        """Refuse results that are not a sound channel pruning of ``original``.

        Pruning channel c must equal zeroing channel c: the original network with every removed
        output channel zeroed has to compute the same logits as the pruned one. This catches
        couplings torch-pruning cannot see (channel shuffles, stored channel counts used in
        reshapes) instead of handing distillation a scrambled teacher.
        """
        if not removed:
            raise _unsupported(original, "torch-pruning found no channel it could remove")
        try:
            out = _eval_forward(pruned, inputs)
        except Exception as exc:
            raise _unsupported(
                original, f"the pruned network no longer runs ({type(exc).__name__}: {exc})"
            ) from exc
        if out.shape != reference.shape:
            raise _unsupported(
                original, f"the pruned network outputs {tuple(out.shape)}, not {tuple(reference.shape)}"
            )
        masked = copy.deepcopy(original)
        modules = dict(masked.named_modules())
        for name, idxs in removed.items():
            index = torch.tensor(sorted(idxs), dtype=torch.long)

            def zero_channels(_m: nn.Module, _inp: object, output: torch.Tensor, index=index):
                output = output.clone()
                output[:, index.to(output.device)] = 0
                return output

            modules[name].register_forward_hook(zero_channels)
        expected = _eval_forward(masked, inputs)
        error = float((out - expected).abs().max())
        scale = float(expected.abs().max().clamp_min(1e-12))
        if error > _EQUIVALENCE_RTOL * scale:
            raise _unsupported(
                original,
                "torch-pruning's dependency graph missed a channel coupling (the pruned network "
                f"differs from the channel-masked original by {error / scale:.2g} relative; "
                "typically a channel shuffle or a reshape to a stored channel count)",
            )


@register_pruner("l1_unstructured")
class L1UnstructuredPruner(TeacherPruner):
    """The reference: zero the ``ratio`` smallest-magnitude weights of every Conv and Linear layer.

    Layer-wise (each layer loses the same fraction), stem and classifier included, biases and
    BatchNorm untouched; the masks are folded into the weights so the result is a plain module
    with no pruning hooks. Shapes do not change, so neither do parameter or MAC counts.
    """

    def prune(self, model: nn.Module, example_inputs: torch.Tensor) -> PruneResult:
        start = time.perf_counter()
        pruned = copy.deepcopy(model)
        with torch.no_grad():
            for _, layer in weighted_layers(pruned):
                torch_prune.l1_unstructured(layer, name="weight", amount=self.config.ratio)
                torch_prune.remove(layer, "weight")
        seconds = time.perf_counter() - start
        stats = _stats(self.name, self.config.ratio, model, pruned, example_inputs, seconds)
        return PruneResult(model=pruned, structure=describe_structure(pruned), stats=stats)
