"""``prepare``: materialise a dataset once into a fixed on-disk format (read by :mod:`r2kd.data.prepared`).

Format (``out_dir``): ``train.pt`` and ``test.pt``, each ``{"images": uint8 N x C x H x W,
"labels": int64 N}`` (weights-only loadable), and ``meta.json``. Later stages read only these, so
they never need the network or the source archives. ``meta.json`` is written last and records a
content hash of each split, so a crash part-way, or a mix of files from two runs, is detected by
``load_prepared`` rather than trained on. Only the prepare stage imports this module: it pulls in
every dataset parser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from r2kd.data import datasets as _datasets  # noqa: F401  (fills the registry)
from r2kd.config import DataConfig, Runtime
from r2kd.data.prepared import FORMAT_VERSION, SPLITS, write_prepared
from r2kd.data.registry import DATASETS, INDEXERS, RawDataset
from r2kd.data.storage import choose_storage, histogram_stats
from r2kd.errors import DataError
from r2kd.files import sha256_state_dict


def first_per_class(labels: torch.Tensor, limit: int | None) -> torch.Tensor:
    """Indices of the first ``limit`` samples of each class, in their original order."""
    if limit is None:
        return torch.arange(labels.numel())
    keep = torch.zeros(labels.numel(), dtype=torch.bool)
    for cls in labels.unique().tolist():
        keep[torch.nonzero(labels == cls).flatten()[:limit]] = True
    return torch.nonzero(keep).flatten()


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Exact per-channel mean and population std in [0, 1] units, from 256-bin pixel histograms.

    Histograms keep the sums in exact integers, so no float accumulation error and no float64 copy
    of a large uint8 set.
    """
    if images.shape[0] == 0:
        raise DataError("the training split is empty; cannot compute normalisation statistics")
    return histogram_stats(np.bincount(images[:, c].numpy().ravel(), minlength=256).astype(np.int64)
                           for c in range(images.shape[1]))


def _check_raw(raw: RawDataset, name: str) -> None:
    for split in SPLITS:
        images, labels = getattr(raw, f"{split}_images"), getattr(raw, f"{split}_labels")
        if images.dtype != torch.uint8 or images.ndim != 4 or labels.dtype != torch.int64 or labels.ndim != 1:
            raise DataError(f"{name}: {split} split is not uint8 N x C x H x W images with int64 labels")
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{name}: {split} has {images.shape[0]} images but {labels.shape[0]} labels")
        if images.shape[0] == 0:
            raise DataError(f"{name}: the {split} split is empty")
        if int(labels.min()) < 0 or int(labels.max()) >= len(raw.class_names):
            raise DataError(f"{name}: {split} labels outside 0..{len(raw.class_names) - 1}")
    if raw.train_images.shape[1:] != raw.test_images.shape[1:]:
        raise DataError(f"{name}: train and test images differ in shape")
    if raw.train_images.shape[2] != raw.train_images.shape[3]:
        raise DataError(f"{name}: images are not square")


def _verified(cfg: DataConfig, raw: RawDataset) -> dict[str, Any] | None:
    """meta.json's ``verified``: who vouched for each source file (the published sums or your pins).

    Every pin in data.checksums must name a file this prepare read: a pin that checks nothing (a
    typo, or the archive when the extracted folder was read instead) is refused, not ignored.
    """
    unused = sorted(set(cfg.checksums) - set(raw.verified))
    if unused:
        read = ", ".join(sorted(raw.verified)) or "none"
        raise DataError(
            f"data.checksums in params.yaml pins {', '.join(unused)}, which preparing {cfg.name} from "
            f"{cfg.root} did not read (the files it read: {read}). Pin the files it reads, by their path "
            f"relative to data.root, or remove the pin."
        )
    if not raw.verified:
        return None
    missing = sorted(set(raw.sources) - set(raw.verified))
    if missing:  # a builder bug, not a user error: never write an unverified source as verified
        raise AssertionError(f"{cfg.name}: no verification recorded for {missing}")
    files = {rel: dict(raw.verified[rel]) for rel in sorted(raw.verified)}
    by = "official" if all(v["by"] == "official" for v in files.values()) else "user"
    return {"by": by, "files": files}


def _counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    return torch.bincount(labels, minlength=num_classes).tolist()


def prepare(cfg: DataConfig, out_dir: Path, *, checksums: Mapping[str, str] | None = None,
            workers: int = Runtime.model_fields["workers"].default) -> dict[str, Any]:
    """Read the configured dataset's source files and write ``out_dir/{train,test}.pt`` + ``meta.json``:
    decoded images, or for a streamed dataset (:mod:`r2kd.data.storage`) an index of the files.

    ``checksums`` (path relative to ``cfg.root`` -> MD5) override the published sums; tests use it
    for small archives built in the official formats. ``workers``: threads that index a streamed
    set (params ``runtime.workers``; results do not depend on it).
    """
    indexer = INDEXERS.get(cfg.name)
    # Listing the files is cheap next to decoding them; auto needs the train count to decide.
    indexed = indexer.index(cfg) if indexer is not None and cfg.storage != "memory" else None
    storage = choose_storage(cfg, len(indexed.train.files) if indexed is not None else None)
    if storage == "stream":  # chosen only for datasets with an indexer, so ``indexed`` is set
        # Imported here: the streaming writer pulls in torchvision (1.4 s), which in-memory sets never use.
        from r2kd.data.write_stream import prepare_stream

        return prepare_stream(cfg, Path(out_dir), indexed, workers)
    return prepare_memory(cfg, Path(out_dir), checksums=checksums)


def prepare_memory(cfg: DataConfig, out_dir: Path, *, checksums: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Decode the dataset into uint8 tensors and write them (the format in this module's docstring)."""
    spec = DATASETS[cfg.name]
    effective = {**spec.checksums, **(checksums or {})}
    raw = spec.build(cfg, effective)  # all parsing and checking happens before anything is written
    _check_raw(raw, cfg.name)
    verified = _verified(cfg, raw)

    splits = {}
    for split, limit in (("train", cfg.train_limit), ("test", cfg.test_limit)):
        images, labels = getattr(raw, f"{split}_images"), getattr(raw, f"{split}_labels")
        keep = first_per_class(labels, limit)
        if limit is not None:
            images, labels = images[keep], labels[keep]
        splits[split] = {"images": images.contiguous(), "labels": labels.contiguous()}

    if raw.mean is not None and raw.std is not None:
        mean, std = list(raw.mean), list(raw.std)
        stats_from = raw.stats_from or "published"
    else:
        mean, std = channel_stats(splits["train"]["images"])
        stats_from = "train split"
    num_classes = len(raw.class_names)
    _, channels, size, _ = splits["train"]["images"].shape
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": cfg.name,
        "num_classes": num_classes,
        "class_names": list(raw.class_names),
        "channels": int(channels),
        "image_size": int(size),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "stats_from": stats_from,
        "crop_padding": int(raw.crop_padding),
        "hflip": bool(raw.hflip),
        "counts": {split: int(splits[split]["labels"].numel()) for split in SPLITS},
        "class_counts": {split: _counts(splits[split]["labels"], num_classes) for split in SPLITS},
        "train_limit": cfg.train_limit,
        "test_limit": cfg.test_limit,
        "sources": dict(sorted(raw.sources.items())),
        **({"verified": verified} if verified else {}),
        "content_sha256": {split: sha256_state_dict(splits[split]) for split in SPLITS},
        **raw.extra,
        "params": {"data": cfg.model_dump(mode="json")},  # what it was prepared from (r2kd/recorded.py)
    }

    return write_prepared(out_dir, splits, meta)
