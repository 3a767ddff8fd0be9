"""A plain description of a (pruned) network's layer widths, and the generic rebuild from it.

Instead of pickling a pruned module (which would need the unsafe full unpickler to load), a checkpoint
records every Conv / Linear / BatchNorm layer's channel counts and groups by qualified name. Loading
builds the *unpruned* architecture and swaps each layer for a resized one of the same class with the
same remaining hyper-parameters (kernel, stride, padding, eps, ...). Nothing in here knows about
particular architectures (docs/prune.md, "Saving and loading without unpickling objects").
"""

from __future__ import annotations

from typing import Any

from torch import nn

STRUCTURE_VERSION = 1

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# The integer entries of each described class's spec (Conv and Linear specs add "bias"), by class name.
_INT_KEYS = {
    "Linear": ("in_features", "out_features"),
    **{c.__name__: ("in_channels", "out_channels", "groups") for c in _CONV},
    **{c.__name__: ("num_features",) for c in _BN},
}


class StructureError(ValueError):
    """A structure description does not fit the model it is applied to."""


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Conv and Linear layers (the ones whose weights pruning acts on), by qualified name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (*_CONV, nn.Linear))]


def describe_structure(model: nn.Module) -> dict[str, Any]:
    """Channel/feature counts and groups of every Conv, Linear and BatchNorm layer of ``model``."""
    modules = {}
    for name, m in model.named_modules():
        # Exact class match only: a subclass could take different constructor arguments.
        if type(m) in (*_CONV, nn.Linear, *_BN):
            kind = type(m).__name__
            modules[name] = {"type": kind, **{key: int(getattr(m, key)) for key in _INT_KEYS[kind]}}
            if not isinstance(m, _BN):
                modules[name]["bias"] = m.bias is not None
    return {"version": STRUCTURE_VERSION, "modules": modules}


def _resized(old: nn.Module, spec: dict[str, Any]) -> nn.Module:
    floats = [t for t in (*old.parameters(recurse=False), *old.buffers(recurse=False)) if t.is_floating_point()]
    kw = {"device": floats[0].device, "dtype": floats[0].dtype} if floats else {}
    if isinstance(old, _CONV):
        new = type(old)(spec["in_channels"], spec["out_channels"], old.kernel_size, stride=old.stride,
                        padding=old.padding, dilation=old.dilation, groups=spec["groups"], bias=spec["bias"],
                        padding_mode=old.padding_mode, **kw)
    elif isinstance(old, nn.Linear):
        new = nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"], **kw)
    else:
        new = type(old)(spec["num_features"], eps=old.eps, momentum=old.momentum, affine=old.affine,
                        track_running_stats=old.track_running_stats, **kw)
    new.train(old.training)
    return new


def _check_spec(name: str, spec: Any, current: dict[str, Any]) -> None:
    if not isinstance(spec, dict):
        raise StructureError(f"entry for layer {name!r} is not a mapping")
    if spec.get("type") != current["type"]:
        raise StructureError(f"layer {name!r} is a {current['type']} in the architecture but a "
                             f"{spec.get('type')!r} in the structure")
    if set(spec) != set(current):
        raise StructureError(f"layer {name!r}: expected keys {sorted(current)}, found {sorted(map(str, spec))}")
    for key in _INT_KEYS[current["type"]]:
        if type(spec[key]) is not int or spec[key] < 1:
            raise StructureError(f"layer {name!r}: {key} must be a positive int, got {spec[key]!r}")
    if "bias" in spec and type(spec["bias"]) is not bool:
        raise StructureError(f"layer {name!r}: bias must be true/false, got {spec['bias']!r}")
    if "groups" in spec and (spec["in_channels"] % spec["groups"] or spec["out_channels"] % spec["groups"]):
        raise StructureError(f"layer {name!r}: {spec['in_channels']} in / {spec['out_channels']} out channels "
                             f"are not divisible by groups={spec['groups']}")


def _listing(names: set[str]) -> str:
    shown = sorted(names)[:5]
    return ", ".join(shown) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def apply_structure(model: nn.Module, structure: Any) -> nn.Module:
    """Resize ``model``'s layers in place to ``structure``; raise StructureError if it does not fit.

    The layer names and classes must match exactly: a structure recorded from another
    architecture is refused here rather than producing a model that only fails at load time.
    """
    if (not isinstance(structure, dict) or structure.get("version") != STRUCTURE_VERSION
            or not isinstance(structure.get("modules"), dict)):
        raise StructureError(f"not a version-{STRUCTURE_VERSION} structure description "
                             "(expected {'version': 1, 'modules': {...}})")
    wanted, current = structure["modules"], describe_structure(model)["modules"]
    unmatched = {"layers of the architecture missing from the structure": set(current) - set(wanted),
                 "layers in the structure that the architecture lacks": set(wanted) - set(current)}
    if any(unmatched.values()):
        raise StructureError("; ".join(f"{what}: {_listing(names)}" for what, names in unmatched.items() if names))
    for name, spec in wanted.items():
        _check_spec(name, spec, current[name])
    for name, spec in wanted.items():
        if spec != current[name]:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, _resized(model.get_submodule(name), spec))
    return model
