"""Datasets: ``prepare`` materialises one into a fixed on-disk format, ``BatchIterator`` serves it.

See docs/data.md for each dataset, where its files go, and the normalisation and base augmentation.
"""

from r2kd.data.config import DataConfig
from r2kd.data.loader import BatchIterator, crop_flip
from r2kd.data.prepare import PreparedData, load_prepared, prepare
from r2kd.data.registry import DATASETS, RawDataset, register

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
