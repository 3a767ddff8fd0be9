"""The one format of a model file: teachers, pruned teachers and students are all written and read here.

``{"format": "r2kd-model-v2", "arch": <r2kd.models.create's arguments>, "structure": None | <pruned layer
widths, r2kd.models.structure>, "stats": {...}, "model": state_dict}``: everything but the tensors is plain
data, so the file loads with ``torch.load(..., weights_only=True)``. It is written atomically; loading
rebuilds ``arch``, resizes it to ``structure`` and loads the weights strictly; every mismatch is a
CheckpointError naming the file (docs/prune.md, "Saving and loading without unpickling objects").
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch import nn

from r2kd import models
from r2kd.errors import CheckpointError, UserError
from r2kd.files import load_checkpoint, save_checkpoint
from r2kd.models.structure import StructureError, apply_structure, describe_structure

FORMAT = "r2kd-model-v2"
_KEYS = {"format", "arch", "structure", "stats", "model"}


def arch_spec(name: str, meta: dict) -> dict[str, Any]:
    """The architecture ``name`` sized for the prepared data set described by ``meta``."""
    return {"name": name, "num_classes": int(meta["num_classes"]), "in_channels": int(meta["channels"]),
            "input_size": int(meta["image_size"])}


def build(arch: dict[str, Any]) -> nn.Module:
    return models.create(**arch)


def save_model(path: str | os.PathLike, model: nn.Module, arch: dict[str, Any], *,
               structure: dict[str, Any] | None = None, stats: dict[str, Any] | None = None) -> None:
    """Write ``model`` (built from ``arch``, resized to ``structure`` if pruned structurally)."""
    for where, value in (("arch", arch), ("structure", structure), ("stats", stats)):
        _check_plain(value, where)
    if structure is not None and structure != describe_structure(model):
        raise ValueError("structure does not describe the model being saved")
    # clone(): a view would otherwise drag its whole (possibly unpruned) storage into the file.
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_checkpoint(path, {"format": FORMAT, "arch": arch, "structure": structure, "stats": stats or {}, "model": state})


def read_model_file(path: str | os.PathLike) -> dict[str, Any]:
    """The checked contents of a model file (weights-only load, format marker, entry types)."""
    payload = load_checkpoint(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an r2kd model file (no '{FORMAT}' marker); rerun the stage that writes it")
    if set(payload) != _KEYS:
        raise CheckpointError(f"{path}: expected entries {sorted(_KEYS)}, found {sorted(payload)}")
    for key in ("arch", "stats", "model"):
        if not isinstance(payload[key], dict):
            raise CheckpointError(f"{path}: entry {key!r} is not a mapping")
    return payload


def load_model(path: str | os.PathLike, arch: dict[str, Any] | None = None, *, device: str | torch.device = "cpu",
               build: Callable[[dict[str, Any]], nn.Module] = build) -> nn.Module:
    """Rebuild the model saved in ``path``, in eval mode on ``device``; ``arch``, if given, must be
    the architecture the file holds (a pruned file holds its teacher's)."""
    payload = read_model_file(path)
    held = payload["arch"]
    if arch is not None and held != arch:
        raise CheckpointError(f"{path} holds {held}, but {arch} was expected; rerun the stage that writes it")
    try:
        model = build(held)
    except (UserError, TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: cannot build the architecture {held}: {exc}") from exc
    if payload["structure"] is not None:
        try:
            apply_structure(model, payload["structure"])
        except StructureError as exc:
            raise CheckpointError(f"{path}: its pruned structure does not fit the architecture {held}: {exc}") from exc
    load_state(model, payload["model"], path)
    return model.to(device).eval()


def load_state(model: nn.Module, state: Any, path: str | os.PathLike) -> None:
    """``model.load_state_dict(state, strict=True)``, with a CheckpointError naming ``path`` if it does not fit."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = "; ".join(line.strip() for line in str(exc).strip().splitlines()[:4])
        raise CheckpointError(f"{path}: its weights do not fit the architecture: {detail}") from None


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: keys must be strings, got {key!r}")
            _check_plain(item, f"{where}.{key}")
    elif value is not None and not isinstance(value, (bool, int, float, str)):
        raise TypeError(f"{where} is a {type(value).__name__}; only plain ints, floats, strings, bools, lists and "
                        "dicts can be saved (anything else would need unpickling to load)")
