"""The corrupted test set the ``corrupt`` stage writes and the ``evaluate`` stage reads.

``data/corrupted/test_c.pt`` holds ``{"images": uint8 [corruption, severity, N, C, H, W],
"labels": int64 [N], "index": int64 [N]}`` (``index``: each image's position in the prepared test
split); ``data/corrupted/meta.json`` names the corruptions, severities and seed, the prepared test
split it was drawn from (its content hash) and the content hash of test_c.pt. Loaded weights-only and
checked against both, like the prepared splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from r2kd.errors import CheckpointError, DataError
from r2kd.files import load_checkpoint, read_json, sha256_state_dict

FORMAT = "r2kd-corrupted-v1"


@dataclass
class CorruptedData:
    images: torch.Tensor  # uint8 [K, S, N, C, H, W]
    labels: torch.Tensor  # int64 [N]
    index: torch.Tensor  # int64 [N], positions in the prepared test split
    meta: dict[str, Any]

    @property
    def enabled(self) -> bool:
        return bool(self.meta["corruptions"]) and self.labels.numel() > 0


def load_corrupted(directory: Path, prepared_meta: dict[str, Any]) -> CorruptedData:
    meta_path, data_path = Path(directory) / "meta.json", Path(directory) / "test_c.pt"
    meta = read_json(meta_path)
    fix = "rerun `r2kd corrupt`"
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{meta_path} is not a corrupted-set description ('{FORMAT}'); {fix}")
    if meta.get("source_sha256") != prepared_meta["content_sha256"]["test"]:
        raise DataError(f"{data_path} was drawn from another prepared test split than data/prepared; {fix}")
    try:
        obj = load_checkpoint(data_path)
    except CheckpointError as exc:
        raise DataError(f"corrupted test set: {exc}") from exc
    if not isinstance(obj, dict) or set(obj) != {"images", "labels", "index"}:
        raise DataError(f"{data_path}: expected entries images, labels, index; {fix}")
    if sha256_state_dict(obj) != meta.get("content_sha256"):
        raise DataError(f"{data_path} does not match {meta_path} (modified, or another run's file); {fix}")
    images, labels = obj["images"], obj["labels"]
    shape = (len(meta["corruptions"]), len(meta["severities"]), labels.numel(), prepared_meta["channels"],
             prepared_meta["image_size"], prepared_meta["image_size"])
    if images.dtype != torch.uint8 or tuple(images.shape) != shape:
        raise DataError(f"{data_path}: images are not uint8 {shape}; {fix}")
    return CorruptedData(images, labels, obj["index"], meta)
