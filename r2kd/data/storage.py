"""Which storage ``prepare`` uses: decoded uint8 tensors in memory, or an index streamed from disk
(``data.storage``; the rule for ``auto``: docs/data.md, "Which storage")."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from r2kd.config import STREAM_ONLY_DATASETS, STREAMABLE_DATASETS, DataConfig

CHANNELS = 3  # the streamable datasets are RGB


def choose_storage(cfg: DataConfig, train_images: int | None) -> str:
    """"memory" or "stream"; ``train_images`` (after train_limit) is needed only for auto."""
    if cfg.storage != "auto":
        return cfg.storage
    if cfg.name not in STREAMABLE_DATASETS:
        return "memory"
    if cfg.name in STREAM_ONLY_DATASETS:
        return "stream"
    assert train_images is not None and cfg.image_size is not None
    mib = train_images * CHANNELS * cfg.image_size**2 / 2**20  # the uint8 train tensor the in-memory path holds
    return "stream" if mib > cfg.memory_limit_mb else "memory"


def histogram_stats(histograms: Iterable[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel mean and population std in [0, 1] units from each channel's 256-bin histogram."""
    values = np.arange(256, dtype=np.int64)
    means, stds = [], []
    for counts in histograms:
        n, s1, s2 = int(counts.sum()), int((counts * values).sum()), int((counts * values * values).sum())
        mean = s1 / n
        means.append(mean / 255.0)
        stds.append(max(s2 / n - mean * mean, 0.0) ** 0.5 / 255.0)
    return means, stds
