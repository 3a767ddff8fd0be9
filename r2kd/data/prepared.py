"""Reading what the ``prepare`` stage wrote: ``train.pt``, ``test.pt`` and ``meta.json``.

``meta.json``'s ``storage`` says what the split files hold: decoded images (``memory``, also when
the key is absent, as in files written before streaming existed; :func:`load_prepared`) or an index
of source files (``stream``; :func:`load_index`, read by r2kd/data/stream.py).

Training stages import this module only, never the dataset parsers. ``meta.json`` is a file a user
can open and edit, so every key the loaders rely on is validated here, with an error naming the
file and the key, before any tensor is trusted against it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from r2kd.errors import CheckpointError, DataError, UserError
from r2kd.files import load_checkpoint, read_json, save_checkpoint, sha256_state_dict, write_json

FORMAT_VERSION = 1
SPLITS = ("train", "test")


@dataclass
class PreparedData:
    train_images: torch.Tensor  # uint8 N x C x H x W
    train_labels: torch.Tensor  # int64 N
    test_images: torch.Tensor
    test_labels: torch.Tensor
    meta: dict[str, Any]


def _int(low: int) -> Callable[[Any, dict], str | None]:
    def check(value: Any, meta: dict) -> str | None:
        # JSON true/false load as bool, which Python counts as int: refuse them explicitly.
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            return f"must be an integer >= {low}"
        return None

    return check


def _per_channel(positive: bool) -> Callable[[Any, dict], str | None]:
    def check(value: Any, meta: dict) -> str | None:
        channels = meta.get("channels")
        ok = isinstance(value, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
        )
        if not ok:
            return "must be a list of finite numbers, one per channel"
        if isinstance(channels, int) and len(value) != channels:
            return f"has {len(value)} values, but 'channels' is {channels}"
        if positive and any(v <= 0 for v in value):
            return "must be positive (images are divided by it)"
        return None

    return check


def _class_names(value: Any, meta: dict) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return "must be a list of strings"
    if isinstance(meta.get("num_classes"), int) and len(value) != meta["num_classes"]:
        return f"has {len(value)} names, but 'num_classes' is {meta['num_classes']}"
    return None


def _per_split(check_value: Callable[[Any], bool], what: str) -> Callable[[Any, dict], str | None]:
    def check(value: Any, meta: dict) -> str | None:
        if not isinstance(value, dict) or any(s not in value or not check_value(value[s]) for s in SPLITS):
            return f"must map 'train' and 'test' to {what}"
        return None

    return check


def _format_version(value: Any, meta: dict) -> str | None:
    return None if value == FORMAT_VERSION else f"is {value!r}, this version of r2kd reads {FORMAT_VERSION}"


_SHA256 = re.compile(r"[0-9a-f]{64}")

# key -> check(value, meta) returning what is wrong, or None. Order matters: later checks use the
# keys validated before them (channels before mean/std, num_classes before class_names).
META_CHECKS: dict[str, Callable[[Any, dict], str | None]] = {
    "format_version": _format_version,
    "name": lambda v, m: None if isinstance(v, str) and v else "must be a non-empty string",
    "num_classes": _int(1),
    "class_names": _class_names,
    "channels": _int(1),
    "image_size": _int(1),
    "mean": _per_channel(positive=False),
    "std": _per_channel(positive=True),
    "crop_padding": _int(0),
    "hflip": lambda v, m: None if isinstance(v, bool) else "must be true or false",
    "counts": _per_split(lambda n: isinstance(n, int) and not isinstance(n, bool) and n >= 0, "image counts >= 0"),
    "content_sha256": _per_split(lambda h: isinstance(h, str) and bool(_SHA256.fullmatch(h)), "SHA-256 hex digests"),
}
REQUIRED_META = tuple(META_CHECKS)
STORAGES = ("memory", "stream")


def _eval_resize(value: Any, meta: dict) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < meta["image_size"]:
        return f"must be an integer >= image_size ({meta['image_size']})"
    return None


# Checked (after META_CHECKS) when storage is "stream".
STREAM_META_CHECKS: dict[str, Callable[[Any, dict], str | None]] = {
    "root": lambda v, m: None if isinstance(v, str) and v and "\x00" not in v else "must be a non-empty path",
    "eval_resize": _eval_resize,
    "index_hash": lambda v, m: None if v in ("sha256", "size") else "must be 'sha256' or 'size'",
}


def validate_meta(meta: Any, meta_path: Path) -> dict[str, Any]:
    """Refuse a meta.json whose keys the loaders rely on are missing or invalid, naming the key."""
    fix = "rerun the prepare stage (or undo the edit)"
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path} does not hold a JSON object; {fix}")
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise DataError(f"{meta_path} lacks the required key(s) {', '.join(map(repr, missing))}; {fix}")
    storage = meta.get("storage", "memory")
    if storage not in STORAGES:
        raise DataError(f"{meta_path}: key 'storage' must be one of {list(STORAGES)} (found {storage!r}); {fix}")
    checks = {**META_CHECKS, **(STREAM_META_CHECKS if storage == "stream" else {})}
    missing = [key for key in checks if key not in meta]
    if missing:
        raise DataError(f"{meta_path} lacks the required key(s) {', '.join(map(repr, missing))}; {fix}")
    for key, check in checks.items():
        problem = check(meta[key], meta)
        if problem:
            raise DataError(f"{meta_path}: key {key!r} {problem} (found {meta[key]!r}); {fix}")
    return meta


def storage_of(meta: dict[str, Any]) -> str:
    return meta.get("storage", "memory")


def _load_split(out_dir: Path, split: str, meta: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    path, obj = _load_obj(out_dir, split)
    if not isinstance(obj, dict) or set(obj) != {"images", "labels"}:
        raise DataError(f"{path} is not a prepared split (expected keys 'images' and 'labels'); rerun prepare")
    images, labels = obj["images"], obj["labels"]
    expected_shape = (meta["counts"][split], meta["channels"], meta["image_size"], meta["image_size"])
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or tuple(images.shape) != expected_shape:
        raise DataError(f"{path}: images are not uint8 {expected_shape} as meta.json says; rerun prepare")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or tuple(labels.shape) != expected_shape[:1]:
        raise DataError(f"{path}: labels are not int64 ({expected_shape[0]},) as meta.json says; rerun prepare")
    _check_labels_and_hash(path, obj, meta, split)
    return images, labels


def _load_obj(out_dir: Path, split: str) -> tuple[Path, Any]:
    path = Path(out_dir) / f"{split}.pt"
    try:
        return path, load_checkpoint(path)
    except CheckpointError as exc:
        raise DataError(f"prepared data: {exc}; rerun the prepare stage") from exc


def _check_labels_and_hash(path: Path, obj: dict[str, torch.Tensor], meta: dict[str, Any], split: str) -> None:
    labels = obj["labels"]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= meta["num_classes"]):
        raise DataError(f"{path}: labels outside 0..{meta['num_classes'] - 1}; rerun prepare")
    if sha256_state_dict(obj) != meta["content_sha256"][split]:
        raise DataError(f"{path} does not match meta.json (another run's file, or modified); rerun prepare")


def load_meta(out_dir: Path) -> dict[str, Any]:
    meta_path = Path(out_dir) / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"{meta_path} does not exist; run the prepare stage first")
    try:
        meta = read_json(meta_path)
    except UserError as exc:
        raise DataError(str(exc)) from exc
    return validate_meta(meta, meta_path)


def load_prepared(out_dir: Path) -> PreparedData:
    """Load what ``prepare`` wrote, refusing missing, corrupt or mismatched files with DataError."""
    out_dir = Path(out_dir)
    meta = load_meta(out_dir)
    if storage_of(meta) != "memory":
        raise DataError(f"{out_dir} holds a streamed dataset (meta.json storage: {storage_of(meta)}): an index of "
                        f"the files under {meta.get('root')}, not decoded images; this step needs the images in "
                        "memory (r2kd.stages.dataset.load_data streams them)")
    train_images, train_labels = _load_split(out_dir, "train", meta)
    test_images, test_labels = _load_split(out_dir, "test", meta)
    return PreparedData(train_images, train_labels, test_images, test_labels, meta)


def load_index(out_dir: Path, split: str, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """One split's index of a streamed dataset (r2kd/data/index.py), checked against meta.json."""
    path, obj = _load_obj(out_dir, split)
    keys = {"files", "labels", "sizes", "sha256"}
    if not isinstance(obj, dict) or set(obj) != keys or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(f"{path} is not a streamed split index (expected tensors {sorted(keys)}); rerun prepare")
    n = meta["counts"][split]
    width = 32 if meta["index_hash"] == "sha256" else 0
    shapes = {"labels": ((n,), torch.int64), "sizes": ((n,), torch.int64), "sha256": ((n, width), torch.uint8)}
    for key, (shape, dtype) in shapes.items():
        if obj[key].dtype != dtype or tuple(obj[key].shape) != shape:
            raise DataError(f"{path}: {key!r} is not {dtype} {shape} as meta.json says; rerun prepare")
    if obj["files"].dtype != torch.uint8 or obj["files"].ndim != 1:
        raise DataError(f"{path}: 'files' is not a uint8 byte string; rerun prepare")
    _check_labels_and_hash(path, obj, meta, split)
    return obj


def write_prepared(out_dir: Path, splits: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Write each split's payload to ``<split>.pt`` and then ``meta.json``, all or nothing.

    The old meta.json goes first: until the new one lands, the directory reads as unprepared, and a
    failure part-way removes the split files already written.
    """
    out_dir = Path(out_dir)
    meta_path = out_dir / "meta.json"
    written: list[Path] = []
    try:
        meta_path.unlink(missing_ok=True)
        for split in SPLITS:
            path = out_dir / f"{split}.pt"
            save_checkpoint(path, splits[split])
            written.append(path)
        write_json(meta_path, meta)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return meta
