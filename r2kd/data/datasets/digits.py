"""scikit-learn's bundled digits: 1,797 8x8 grey images, no download, a stratified split.

The set ships as one table, so ``prepare`` splits it: stratified by class with
``data.split_seed``, ``data.test_fraction`` of each class to test. Pixels are 0..16 counts; they
become 0..255 by round(v * 255 / 16) so every dataset shares the uint8 format. Horizontal flips are
off (a mirrored 2, 3, 7 is not the same digit) and crops pad by 1 pixel (an eighth of the side, as
4 is of CIFAR's 32).
"""

from __future__ import annotations

from importlib import resources
from typing import Mapping

import numpy as np
import torch

from r2kd.config import DataConfig
from r2kd.data.registry import RawDataset, register
from r2kd.data.sources import digests


def _to_uint8(values: np.ndarray) -> np.ndarray:
    # Exact: 255*v/16 is never a .5 tie except at v = 8 (127.5 -> 128 under both rounding rules).
    return np.floor(values.astype(np.float64) * 255.0 / 16.0 + 0.5).astype(np.uint8)


def split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split; returns (train_idx, test_idx), each in a seeded shuffled order."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        index, test_size=test_fraction, random_state=seed, shuffle=True, stratify=labels
    )
    return np.asarray(train_idx), np.asarray(test_idx)


@register("digits")
def build_digits(cfg: DataConfig, checksums: Mapping[str, str]) -> RawDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = _to_uint8(bunch.images)[:, None, :, :]  # N x 1 x 8 x 8
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = split_indices(labels, cfg.test_fraction, cfg.split_seed)
    source = resources.files("sklearn.datasets.data") / "digits.csv.gz"
    _, sha = digests(source)  # the bundled file changes only with scikit-learn; record which one
    return RawDataset(
        train_images=torch.from_numpy(images[train_idx].copy()),
        train_labels=torch.from_numpy(labels[train_idx].copy()),
        test_images=torch.from_numpy(images[test_idx].copy()),
        test_labels=torch.from_numpy(labels[test_idx].copy()),
        class_names=[str(c) for c in range(10)],
        sources={"sklearn/datasets/data/digits.csv.gz": sha},
        crop_padding=1,
        hflip=False,
        extra={"test_fraction": cfg.test_fraction, "split_seed": cfg.split_seed},
    )
