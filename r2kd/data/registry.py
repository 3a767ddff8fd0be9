"""Dataset registry: one small module per dataset registers a builder under its params.yaml name.

A builder turns the user's source files into :class:`RawDataset` (uint8 tensors in memory); it
never writes into the prepared output directory, so a failure while parsing cannot leave a
half-prepared dataset behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from r2kd.config import DataConfig


@dataclass
class RawDataset:
    train_images: torch.Tensor  # uint8 N x C x H x W
    train_labels: torch.Tensor  # int64 N
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str]
    # relative path under data.root -> sha256 of every source file parsed
    sources: dict[str, str]
    crop_padding: int
    hflip: bool
    # Published per-channel statistics; None means "compute them on the train split".
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    # How meta.json names the source of mean/std when they are given (default "published").
    stats_from: str | None = None
    extra: dict = field(default_factory=dict)  # dataset-specific meta entries (e.g. wnids)
    # relative path under data.root -> who vouched for that source file: {"by": "official" | "user",
    # "how": ...} (r2kd/data/sources.py: official, check_pin); meta.json's "verified"
    verified: dict[str, dict[str, str]] = field(default_factory=dict)


Builder = Callable[[DataConfig, Mapping[str, str]], RawDataset]


@dataclass(frozen=True)
class DatasetSpec:
    build: Builder
    # relative path under data.root -> published MD5 (overridable by prepare(checksums=...))
    checksums: Mapping[str, str]


DATASETS: dict[str, DatasetSpec] = {}


def register(name: str, checksums: Mapping[str, str] | None = None) -> Callable[[Builder], Builder]:
    def decorate(build: Builder) -> Builder:
        if name in DATASETS:
            raise RuntimeError(f"dataset {name!r} registered twice")
        DATASETS[name] = DatasetSpec(build=build, checksums=dict(checksums or {}))
        return build

    return decorate


# --- streamed datasets: an index of files, decoded by the loader each epoch (r2kd/data/stream.py) ---
@dataclass
class FileList:
    """One split of a streamed dataset: files (relative to data.root, POSIX) and their labels."""

    files: list[str]
    labels: list[int]


@dataclass
class IndexedDataset:
    """What an indexer finds under data.root: the files of each split, nothing decoded yet."""

    train: FileList
    test: FileList
    class_names: list[str]
    # Published per-channel statistics; None: computed on a bounded sample of the train split.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    stats_from: str | None = None
    extra: dict = field(default_factory=dict)


# Indexers apply data.train_limit / data.test_limit themselves (the first files of each class).
Indexer = Callable[[DataConfig], IndexedDataset]
INDEXERS: dict[str, Indexer] = {}


def register_index(name: str) -> Callable[[Indexer], Indexer]:
    def decorate(index: Indexer) -> Indexer:
        if name in INDEXERS:
            raise RuntimeError(f"dataset index {name!r} registered twice")
        INDEXERS[name] = index
        return index

    return decorate
