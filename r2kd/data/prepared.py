"""The format the ``prepare`` stage writes: ``train.pt``, ``test.pt`` and ``meta.json``, whose ``storage`` says
whether the splits hold decoded images or a stream index; docs/data.md ("meta.json") lists the keys and checks.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from r2kd.config import DataConfig
from r2kd.data.registry import IndexedDataset, RawDataset
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


# check(value, meta) returns what is wrong with a meta.json value, or None.
Check = Callable[[Any, dict], "str | None"]


def _is_int(value: Any, low: int) -> bool:
    # JSON true/false load as bool, which Python counts as int: refuse them explicitly.
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _int(low: int) -> Check:
    return lambda v, m: None if _is_int(v, low) else f"must be an integer >= {low}"


def _per_channel(positive: bool) -> Check:
    def check(value: Any, meta: dict) -> str | None:
        channels = meta.get("channels")
        if not isinstance(value, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
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


def _per_split(ok: Callable[[Any], bool], what: str) -> Check:
    return lambda v, m: (None if isinstance(v, dict) and all(s in v and ok(v[s]) for s in SPLITS)
                         else f"must map 'train' and 'test' to {what}")


_SHA256 = re.compile(r"[0-9a-f]{64}")

# Order matters: later checks use the keys validated before them (channels before mean/std,
# num_classes before class_names).
META_CHECKS: dict[str, Check] = {
    "format_version": lambda v, m: (None if v == FORMAT_VERSION
                                    else f"is {v!r}, this version of r2kd reads {FORMAT_VERSION}"),
    "name": lambda v, m: None if isinstance(v, str) and v else "must be a non-empty string",
    "num_classes": _int(1),
    "class_names": _class_names,
    "channels": _int(1),
    "image_size": _int(1),
    "mean": _per_channel(positive=False),
    "std": _per_channel(positive=True),
    "crop_padding": _int(0),
    "hflip": lambda v, m: None if isinstance(v, bool) else "must be true or false",
    "counts": _per_split(lambda n: _is_int(n, 0), "image counts >= 0"),
    "content_sha256": _per_split(lambda h: isinstance(h, str) and bool(_SHA256.fullmatch(h)), "SHA-256 hex digests"),
}
STORAGES = ("memory", "stream")
# Checked (after META_CHECKS) when storage is "stream".
STREAM_META_CHECKS: dict[str, Check] = {
    "root": lambda v, m: None if isinstance(v, str) and v and "\x00" not in v else "must be a non-empty path",
    "eval_resize": lambda v, m: (None if _is_int(v, m["image_size"])
                                 else f"must be an integer >= image_size ({m['image_size']})"),
    "index_hash": lambda v, m: None if v in ("sha256", "size") else "must be 'sha256' or 'size'",
}


def storage_of(meta: dict[str, Any]) -> str:
    return meta.get("storage", "memory")


def _load_split(out_dir: Path, split: str, meta: dict[str, Any], shapes: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """``<split>.pt``, refused unless it holds exactly the tensors ``shapes`` names (key -> (shape,
    dtype); None: any length), labels in range and the content hash meta.json records."""
    path = Path(out_dir) / f"{split}.pt"
    try:
        obj = load_checkpoint(path)
    except CheckpointError as exc:
        raise DataError(f"prepared data: {exc}; rerun the prepare stage") from exc
    if (not isinstance(obj, dict) or set(obj) != set(shapes)
            or not all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise DataError(f"{path} is not a prepared split (expected tensors {sorted(shapes)}); rerun prepare")
    for key, (shape, dtype) in shapes.items():
        found = tuple(obj[key].shape)
        if obj[key].dtype != dtype or len(found) != len(shape) or any(e not in (None, f) for e, f in zip(shape, found)):
            raise DataError(f"{path}: {key!r} is not {dtype} {shape} as meta.json says; rerun prepare")
    labels = obj["labels"]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= meta["num_classes"]):
        raise DataError(f"{path}: labels outside 0..{meta['num_classes'] - 1}; rerun prepare")
    if sha256_state_dict(obj) != meta["content_sha256"][split]:
        raise DataError(f"{path} does not match meta.json (another run's file, or modified); rerun prepare")
    return obj


def load_meta(out_dir: Path) -> dict[str, Any]:
    """``out_dir``'s meta.json, refused if a key the loaders rely on is missing or invalid, naming the key."""
    meta_path = Path(out_dir) / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"{meta_path} does not exist; run the prepare stage first")
    try:
        meta = read_json(meta_path)
    except UserError as exc:
        raise DataError(str(exc)) from exc
    fix = "rerun the prepare stage (or undo the edit)"
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path} does not hold a JSON object; {fix}")
    storage = storage_of(meta)
    checks = {**META_CHECKS, **(STREAM_META_CHECKS if storage == "stream" else {})}
    missing = [key for key in checks if key not in meta]
    if missing:
        raise DataError(f"{meta_path} lacks the required key(s) {', '.join(map(repr, missing))}; {fix}")
    if storage not in STORAGES:
        raise DataError(f"{meta_path}: key 'storage' must be one of {list(STORAGES)} (found {storage!r}); {fix}")
    for key, check in checks.items():
        problem = check(meta[key], meta)
        if problem:
            raise DataError(f"{meta_path}: key {key!r} {problem} (found {meta[key]!r}); {fix}")
    return meta


def load_prepared(out_dir: Path) -> PreparedData:
    """Load what ``prepare`` wrote, refusing missing, corrupt or mismatched files with DataError."""
    out_dir = Path(out_dir)
    meta = load_meta(out_dir)
    if storage_of(meta) != "memory":
        raise DataError(f"{out_dir} holds a streamed dataset (meta.json storage: stream): an index of "
                        f"the files under {meta.get('root')}, not decoded images; this step needs the images in "
                        "memory (r2kd.stages.dataset.load_data streams them)")
    tensors = []  # train images, train labels, test images, test labels
    for split in SPLITS:
        n, c, size = meta["counts"][split], meta["channels"], meta["image_size"]
        obj = _load_split(out_dir, split, meta, {"images": ((n, c, size, size), torch.uint8),
                                                 "labels": ((n,), torch.int64)})
        tensors += [obj["images"], obj["labels"]]
    return PreparedData(*tensors, meta)


def load_index(out_dir: Path, split: str, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """One split's index of a streamed dataset (r2kd/data/index.py), checked against meta.json."""
    n, width = meta["counts"][split], 32 if meta["index_hash"] == "sha256" else 0
    return _load_split(out_dir, split, meta, {"files": ((None,), torch.uint8), "labels": ((n,), torch.int64),
                                              "sizes": ((n,), torch.int64), "sha256": ((n, width), torch.uint8)})


def write_prepared(cfg: DataConfig, out_dir: Path, found: RawDataset | IndexedDataset,
                   splits: dict[str, dict[str, torch.Tensor]], compute_stats: Callable[[], tuple[list, list, str]],
                   **keys: Any) -> dict[str, Any]:
    """Write each split's payload to ``<split>.pt``, then a ``meta.json`` of the keys both storages share plus
    ``keys`` (mean/std: ``found``'s published ones, else ``compute_stats()``: mean, std, stats_from); return the
    meta. All or nothing: the old meta.json goes first, so until the new one lands the directory reads as
    unprepared, and a failure part-way removes the split files already written."""
    if found.mean is not None and found.std is not None:
        mean, std, stats_from = found.mean, found.std, found.stats_from or "published"
    else:
        mean, std, stats_from = compute_stats()
    num_classes = len(found.class_names)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": cfg.name,
        "num_classes": num_classes,
        "class_names": list(found.class_names),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "stats_from": stats_from,
        "counts": {split: int(splits[split]["labels"].numel()) for split in SPLITS},
        "class_counts": {split: torch.bincount(splits[split]["labels"], minlength=num_classes).tolist()
                         for split in SPLITS},
        "train_limit": cfg.train_limit,
        "test_limit": cfg.test_limit,
        "content_sha256": {split: sha256_state_dict(splits[split]) for split in SPLITS},
        **keys,
        **found.extra,
        "params": {"data": cfg.model_dump(mode="json")},  # what it was prepared from (r2kd/recorded.py)
    }
    meta_path = Path(out_dir) / "meta.json"
    written: list[Path] = []
    try:
        meta_path.unlink(missing_ok=True)
        for split in SPLITS:
            path = meta_path.with_name(f"{split}.pt")
            save_checkpoint(path, splits[split])
            written.append(path)
        write_json(meta_path, meta)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return meta
