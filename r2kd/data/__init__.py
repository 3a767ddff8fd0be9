"""Datasets: ``prepare`` materialises one into a fixed on-disk format, ``BatchIterator`` serves it.

``prepare`` (and the filled ``DATASETS`` registry) are imported on first use: they pull in every
dataset parser, which training stages, reading only the prepared files, never need.
See docs/data.md for each dataset, where its files go, and the normalisation and base augmentation.
"""

from typing import Any

from r2kd.data.config import DataConfig
from r2kd.data.loader import BatchIterator, crop_flip
from r2kd.data.prepared import PreparedData, load_prepared
from r2kd.data.registry import RawDataset, register

__all__ = [
    "DATASETS",
    "BatchIterator",
    "DataConfig",
    "PreparedData",
    "RawDataset",
    "crop_flip",
    "load_prepared",
    "prepare",
    "register",
]


def __getattr__(name: str) -> Any:
    if name in ("prepare", "DATASETS"):
        from r2kd.data import write

        return getattr(write, name)
    raise AttributeError(f"module 'r2kd.data' has no attribute {name!r}")
