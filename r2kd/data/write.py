"""``prepare``: materialise a dataset once into the fixed on-disk format :mod:`r2kd.data.prepared` reads
(docs/data.md). Only the prepare stage imports this module: it pulls in every dataset parser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from r2kd.data import datasets as _datasets  # noqa: F401  (fills the registry)
from r2kd.config import DataConfig, Runtime
from r2kd.data.prepared import SPLITS, write_prepared
from r2kd.data.registry import DATASETS, INDEXERS, RawDataset
from r2kd.data.storage import choose_storage, histogram_stats
from r2kd.errors import DataError


def first_per_class(labels: torch.Tensor, limit: int) -> torch.Tensor:
    """Indices of the first ``limit`` samples of each class, in their original order."""
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
    indexed = indexer(cfg) if indexer is not None and cfg.storage != "memory" else None
    storage = choose_storage(cfg, len(indexed.train.files) if indexed is not None else None)
    if storage == "stream":  # chosen only for datasets with an indexer, so ``indexed`` is set
        # Imported here: the streaming writer pulls in torchvision (1.4 s), which in-memory sets never use.
        from r2kd.data.write_stream import prepare_stream

        return prepare_stream(cfg, Path(out_dir), indexed, workers)
    return prepare_memory(cfg, Path(out_dir), checksums=checksums)


def prepare_memory(cfg: DataConfig, out_dir: Path, *, checksums: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Decode the dataset into uint8 tensors and write them (``{"images", "labels"}`` per split)."""
    spec = DATASETS[cfg.name]
    raw = spec.build(cfg, {**spec.checksums, **(checksums or {})})  # all parsing and checks before any write
    _check_raw(raw, cfg.name)
    verified = _verified(cfg, raw)
    splits = {}
    for split, limit in (("train", cfg.train_limit), ("test", cfg.test_limit)):
        images, labels = getattr(raw, f"{split}_images"), getattr(raw, f"{split}_labels")
        if limit is not None:
            keep = first_per_class(labels, limit)
            images, labels = images[keep], labels[keep]
        splits[split] = {"images": images.contiguous(), "labels": labels.contiguous()}
    _, channels, size, _ = splits["train"]["images"].shape
    return write_prepared(
        cfg, out_dir, raw, splits, lambda: (*channel_stats(splits["train"]["images"]), "train split"),
        channels=int(channels), image_size=int(size), crop_padding=int(raw.crop_padding), hflip=bool(raw.hflip),
        sources=dict(sorted(raw.sources.items())), **({"verified": verified} if verified else {}),
    )
