"""Weights-only files for pruned teachers.

A pruned module cannot be pickled into a checkpoint that loads with ``weights_only=True``, so the
file holds what is needed to rebuild it: how to build the unpruned architecture (``arch``), the
layer widths after pruning (``structure``), and the state dict. Everything is a tensor or a plain
int / float / str / bool / list / dict.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch import nn

from r2kd.errors import CheckpointError, UserError
from r2kd.files import load_checkpoint, save_checkpoint
from r2kd.pruning.structure import StructureError, apply_structure, describe_structure

FORMAT = "r2kd.pruned_teacher"
FORMAT_VERSION = 1
_KEYS = {"format", "format_version", "arch", "structure", "stats", "state_dict"}


def _check_plain(value: Any, where: str) -> None:
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: keys must be strings, got {key!r}")
            _check_plain(item, f"{where}.{key}")
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}; only plain ints, floats, strings, bools, lists and "
        "dicts can be saved (anything else would need unpickling to load)"
    )


def save_pruned(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    arch: dict[str, Any],
    structure: dict[str, Any],
    stats: dict[str, Any],
) -> None:
    """Write ``model`` atomically; ``arch`` is what ``build`` (default: ``r2kd.models.create``) takes."""
    _check_plain(arch, "arch")
    _check_plain(structure, "structure")
    _check_plain(stats, "stats")
    if structure != describe_structure(model):
        raise ValueError("structure does not describe the model being saved")
    # clone(): a view would otherwise drag its whole (possibly unpruned) storage into the file.
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_checkpoint(
        path,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "arch": arch,
            "structure": structure,
            "stats": stats,
            "state_dict": state,
        },
    )


def _build_from_zoo(arch: dict[str, Any]) -> nn.Module:
    from r2kd.models import create  # noqa: PLC0415  (the zoo is optional for this module)

    return create(**arch)


def _read(path: str | os.PathLike, map_location: str | torch.device) -> dict[str, Any]:
    payload = load_checkpoint(path, map_location=map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a pruned-teacher file (no format marker {FORMAT!r}); "
            "produce it with the prune stage"
        )
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has pruned-teacher format version {payload.get('format_version')!r}; "
            f"this code reads version {FORMAT_VERSION}: rerun the prune stage"
        )
    if set(payload) != _KEYS:
        raise CheckpointError(f"{path}: expected entries {sorted(_KEYS)}, found {sorted(payload)}")
    for key in ("arch", "structure", "stats", "state_dict"):
        if not isinstance(payload[key], dict):
            raise CheckpointError(f"{path}: entry {key!r} is not a mapping")
    if not all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values()):
        raise CheckpointError(f"{path}: state_dict holds something other than tensors")
    return payload


def load_pruned(
    path: str | os.PathLike,
    *,
    build: Callable[[dict[str, Any]], nn.Module] | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a pruned teacher saved by :func:`save_pruned`; returns it in eval mode, with
    ``{"arch", "structure", "stats"}``. Any mismatch is a CheckpointError naming ``path``."""
    payload = _read(path, map_location)
    arch = payload["arch"]
    try:
        model = (build or _build_from_zoo)(arch)
    except (UserError, TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: cannot build the architecture {arch}: {exc}") from exc
    try:
        apply_structure(model, payload["structure"])
    except StructureError as exc:
        raise CheckpointError(
            f"{path}: its pruned structure does not fit the architecture {arch}: {exc}"
        ) from exc
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"{path}: its weights do not fit the rebuilt architecture {arch}: "
            + " ".join(line.strip() for line in first[:4])
        ) from exc
    model.to(map_location).eval()
    meta = {k: payload[k] for k in ("arch", "structure", "stats")}
    return model, meta
