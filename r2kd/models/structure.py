"""A plain description of a (pruned) network's layer widths, and the generic rebuild from it.

Structured pruning changes the shapes of Conv / Linear / BatchNorm layers, so a pruned state dict
no longer fits the architecture it came from. Instead of pickling the pruned module (which would
need the unsafe full unpickler to load), a checkpoint records, for every such layer by qualified name,
its channel counts and groups. Loading builds the *unpruned* architecture and swaps each layer for
a resized one of the same class with the same remaining hyper-parameters (kernel, stride,
padding, eps, ...). Nothing in here knows about particular architectures. r2kd/modelfile.py
records a pruned model's structure; r2kd/pruning measures layers with :func:`weighted_layers`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

STRUCTURE_VERSION = 1

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_DESCRIBED = (*_CONV, nn.Linear, *_BN)
_TYPES = {cls.__name__: cls for cls in _DESCRIBED}


class StructureError(ValueError):
    """A structure description does not fit the model it is applied to."""


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Conv and Linear layers (the ones whose weights pruning acts on), by qualified name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (*_CONV, nn.Linear))]


def _describe(module: nn.Module) -> dict[str, Any]:
    # Exact class match only: a subclass could take different constructor arguments.
    kind = type(module).__name__
    if isinstance(module, _CONV):
        return {
            "type": kind,
            "in_channels": int(module.in_channels),
            "out_channels": int(module.out_channels),
            "groups": int(module.groups),
            "bias": module.bias is not None,
        }
    if isinstance(module, nn.Linear):
        return {
            "type": kind,
            "in_features": int(module.in_features),
            "out_features": int(module.out_features),
            "bias": module.bias is not None,
        }
    return {"type": kind, "num_features": int(module.num_features)}


def describe_structure(model: nn.Module) -> dict[str, Any]:
    """Channel/feature counts and groups of every Conv, Linear and BatchNorm layer of ``model``."""
    modules = {
        name: _describe(m) for name, m in model.named_modules() if type(m) in _TYPES.values()
    }
    return {"version": STRUCTURE_VERSION, "modules": modules}


def _device_dtype(module: nn.Module) -> dict[str, Any]:
    for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
        if tensor.is_floating_point():
            return {"device": tensor.device, "dtype": tensor.dtype}
    return {}


def _resized(old: nn.Module, spec: dict[str, Any]) -> nn.Module:
    kw = _device_dtype(old)
    if isinstance(old, _CONV):
        new = type(old)(
            spec["in_channels"],
            spec["out_channels"],
            old.kernel_size,
            stride=old.stride,
            padding=old.padding,
            dilation=old.dilation,
            groups=spec["groups"],
            bias=spec["bias"],
            padding_mode=old.padding_mode,
            **kw,
        )
    elif isinstance(old, nn.Linear):
        new = nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"], **kw)
    else:
        new = type(old)(
            spec["num_features"],
            eps=old.eps,
            momentum=old.momentum,
            affine=old.affine,
            track_running_stats=old.track_running_stats,
            **kw,
        )
    new.train(old.training)
    return new


_INT_KEYS = {
    "Linear": ("in_features", "out_features"),
    **{c.__name__: ("in_channels", "out_channels", "groups") for c in _CONV},
    **{c.__name__: ("num_features",) for c in _BN},
}


def _check_spec(name: str, spec: Any, current: dict[str, Any]) -> None:
    if not isinstance(spec, dict):
        raise StructureError(f"entry for layer {name!r} is not a mapping")
    if spec.get("type") != current["type"]:
        raise StructureError(
            f"layer {name!r} is a {current['type']} in the architecture but a "
            f"{spec.get('type')!r} in the structure"
        )
    if set(spec) != set(current):
        raise StructureError(
            f"layer {name!r}: expected keys {sorted(current)}, found {sorted(map(str, spec))}"
        )
    for key in _INT_KEYS[current["type"]]:
        value = spec[key]
        if type(value) is not int or value < 1:
            raise StructureError(f"layer {name!r}: {key} must be a positive int, got {value!r}")
    if "bias" in spec and type(spec["bias"]) is not bool:
        raise StructureError(f"layer {name!r}: bias must be true/false, got {spec['bias']!r}")
    if "groups" in spec and (
        spec["in_channels"] % spec["groups"] or spec["out_channels"] % spec["groups"]
    ):
        raise StructureError(
            f"layer {name!r}: {spec['in_channels']} in / {spec['out_channels']} out channels "
            f"are not divisible by groups={spec['groups']}"
        )


def _listing(names: set[str]) -> str:
    shown = sorted(names)[:5]
    return ", ".join(shown) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def apply_structure(model: nn.Module, structure: Any) -> nn.Module:
    """Resize ``model``'s layers in place to ``structure``; raise StructureError if it does not fit.

    The layer names and classes must match exactly: a structure recorded from another
    architecture is refused here rather than producing a model that only fails at load time.
    """
    if (
        not isinstance(structure, dict)
        or structure.get("version") != STRUCTURE_VERSION
        or not isinstance(structure.get("modules"), dict)
    ):
        raise StructureError(
            f"not a version-{STRUCTURE_VERSION} structure description "
            "(expected {'version': 1, 'modules': {...}})"
        )
    wanted = structure["modules"]
    current = describe_structure(model)["modules"]
    missing, extra = set(current) - set(wanted), set(wanted) - set(current)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"layers of the architecture missing from the structure: {_listing(missing)}")
        if extra:
            parts.append(f"layers in the structure that the architecture lacks: {_listing(extra)}")
        raise StructureError("; ".join(parts))
    for name, spec in wanted.items():
        _check_spec(name, spec, current[name])
    for name, spec in wanted.items():
        if spec == current[name]:
            continue
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, leaf, _resized(parent.get_submodule(leaf), spec))
    return model
