"""scikit-learn's bundled digits: 1,797 8x8 grey images, no download, split by class with ``data.split_seed``
and ``data.test_fraction`` (pixels, augmentation: docs/data.md, "digits").
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
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
    """Stratified, seeded split; returns (train_idx, test_idx), each in a seeded shuffled order.

    The same indices as scikit-learn's ``train_test_split(arange(n), test_size=test_fraction,
    random_state=seed, shuffle=True, stratify=labels)`` (tests/test_data.py compares them over many
    seeds and fractions): importing scikit-learn's model_selection costs ~1 s on the critical path
    of every ``prepare``, the split itself microseconds."""
    rng = np.random.RandomState(seed)
    n = len(labels)
    n_test = int(np.ceil(test_fraction * n))
    n_train = n - n_test
    _, class_of = np.unique(labels, return_inverse=True)
    class_counts = np.bincount(class_of)
    members = np.split(np.argsort(class_of, kind="mergesort"), np.cumsum(class_counts)[:-1])
    train_per_class = _approximate_mode(class_counts, n_train, rng)
    test_per_class = _approximate_mode(class_counts - train_per_class, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for k, indices in enumerate(members):
        shuffled = indices.take(rng.permutation(class_counts[k]), mode="clip")
        train.extend(shuffled[: train_per_class[k]])
        test.extend(shuffled[train_per_class[k]: train_per_class[k] + test_per_class[k]])
    return np.asarray(rng.permutation(train)), np.asarray(rng.permutation(test))


def _approximate_mode(class_counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Per-class draws proportional to ``class_counts`` summing to ``draws``: the floors, then one
    more for the largest remainders, ties broken at random (scikit-learn's ``_approximate_mode``)."""
    continuous = class_counts / class_counts.sum() * draws
    floored = np.floor(continuous)
    missing = int(draws - floored.sum())
    if missing > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            now = min(len(tied), missing)
            floored[rng.choice(tied, size=now, replace=False)] += 1
            missing -= now
            if missing == 0:
                break
    return floored.astype(int)


def bundled_table() -> Path:
    """scikit-learn's digits.csv.gz, found without importing scikit-learn (~1 s)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ImportError("the digits dataset ships with scikit-learn, which is not installed")
    return Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"


def load_table(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 8 x 8 of 0..16 counts, labels N): 64 pixel columns then the label, as
    ``sklearn.datasets.load_digits`` reads the same file."""
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


@register("digits")
def build_digits(cfg: DataConfig, checksums: Mapping[str, str]) -> RawDataset:
    source = bundled_table()
    _, sha = digests(source)  # the bundled file changes only with scikit-learn; record which one
    counts, labels = load_table(source)
    images = _to_uint8(counts)[:, None, :, :]  # N x 1 x 8 x 8
    train_idx, test_idx = split_indices(labels, cfg.test_fraction, cfg.split_seed)
    return RawDataset(  # train images, train labels, test images, test labels
        *(torch.from_numpy(a[idx].copy()) for idx in (train_idx, test_idx) for a in (images, labels)),
        class_names=[str(c) for c in range(10)], sources={"sklearn/datasets/data/digits.csv.gz": sha},
        crop_padding=1, hflip=False, extra={"test_fraction": cfg.test_fraction, "split_seed": cfg.split_seed},
    )
