"""What several stages share: model checkpoints and data iterators (provenance: record.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from r2kd import models, paths
from r2kd.data.loader import BatchIterator
from r2kd.data.prepared import load_prepared
from r2kd.errors import CheckpointError
from r2kd.files import load_checkpoint, save_checkpoint

MODEL_FORMAT = "r2kd-model-v1"


# --- data -------------------------------------------------------------------------------------
@dataclass
class Data:
    meta: dict
    train: BatchIterator
    test: BatchIterator
    files: list[Path]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.meta["channels"], self.meta["image_size"], self.meta["image_size"])


def prepared_files() -> list[Path]:
    return [paths.PREPARED / "train.pt", paths.PREPARED / "test.pt", paths.PREPARED / "meta.json"]


def load_data(batch_size: int, device: torch.device, generator: torch.Generator | None) -> Data:
    prepared = load_prepared(paths.PREPARED)
    meta = prepared.meta
    common = dict(batch_size=batch_size, mean=meta["mean"], std=meta["std"], device=device)
    train = BatchIterator(
        prepared.train_images,
        prepared.train_labels,
        train=True,
        generator=generator,
        crop_padding=meta["crop_padding"],
        hflip=meta["hflip"],
        **common,
    )
    test = BatchIterator(prepared.test_images, prepared.test_labels, train=False, generator=None, **common)
    return Data(meta=meta, train=train, test=test, files=prepared_files())


# --- models -----------------------------------------------------------------------------------
def arch_spec(name: str, meta: dict) -> dict:
    return {
        "name": name,
        "num_classes": int(meta["num_classes"]),
        "in_channels": int(meta["channels"]),
        "input_size": int(meta["image_size"]),
    }


def build(spec: dict) -> torch.nn.Module:
    return models.create(spec["name"], spec["num_classes"], in_channels=spec["in_channels"], input_size=spec["input_size"])


def save_model(path: Path, model: torch.nn.Module, spec: dict) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(path, {"format": MODEL_FORMAT, "arch": spec, "model": state})


def load_model(path: Path, spec: dict, device: torch.device) -> torch.nn.Module:
    """Rebuild ``spec`` and load weights saved by :func:`save_model`; refuse anything else clearly."""
    blob = load_checkpoint(path)
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path} is not an r2kd model checkpoint (no '{MODEL_FORMAT}' marker)")
    if blob.get("arch") != spec:
        raise CheckpointError(f"{path} holds {blob.get('arch')}, but {spec} was expected; rerun the stage that writes it")
    model = build(spec)
    load_state_strict(model, blob["model"], path)
    return model.to(device)


def load_state_strict(model: torch.nn.Module, state: Any, path: Path) -> None:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[:4])
        raise CheckpointError(f"{path} does not fit the architecture: {detail}") from None


def complexity(model: torch.nn.Module, input_shape: tuple[int, int, int]) -> dict[str, int]:
    return {"params": models.count_parameters(model), "macs": models.count_macs(model, input_shape)}
