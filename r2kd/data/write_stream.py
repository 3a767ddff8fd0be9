"""``prepare`` for a streamed dataset: an index of the source files, not their pixels.

Writes the same three files as the in-memory format, so the pipeline's declared outputs do not
change: ``train.pt`` and ``test.pt`` each hold a split's index (:mod:`r2kd.data.index`) and
``meta.json`` says ``storage: stream``, where the files are (``root``) and the eval resize. As in
:mod:`r2kd.data.write`, the old ``meta.json`` is removed first and the new one written last.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from r2kd.config import DataConfig
from r2kd.data.index import build_index, decode_files
from r2kd.data.prepared import FORMAT_VERSION, SPLITS, write_prepared
from r2kd.data.registry import IndexedDataset
from r2kd.data.transforms import eval_view, to_chw
from r2kd.data.storage import histogram_stats
from r2kd.errors import DataError
from r2kd.files import sha256_state_dict

# Train images whose pixels give mean/std when no published statistics exist (evenly spaced over the
# sorted index, so the same every run): 1,000 pins each mean to about +-0.005 on natural images.
STATS_SAMPLE = 1000
CHANNELS = 3  # streamed images are converted to RGB
TRAIN_TRANSFORM = "RandomResizedCrop(image_size, scale=(0.08, 1), ratio=(3/4, 4/3)) + RandomHorizontalFlip(0.5)"
EVAL_TRANSFORM = "Resize(eval_resize) + CenterCrop(image_size)"


def _histograms(root: Path, rel: str, resize: int, size: int) -> np.ndarray:
    from PIL import Image

    path = root / rel
    try:
        with Image.open(io.BytesIO(path.read_bytes())) as img:
            chw = to_chw(eval_view(img.convert("RGB"), resize, size))
    except Exception as exc:
        raise DataError(f"{path} is not a readable image: {exc}") from exc
    return np.stack([np.bincount(c.ravel(), minlength=256) for c in chw]).astype(np.int64)


def sample_stats(root: Path, files: list[str], resize: int, size: int, threads: int,
                 count: int = STATS_SAMPLE) -> tuple[list[float], list[float], int]:
    """Per-channel mean and population std (in [0, 1]) of up to ``count`` evenly spaced train images
    after the eval transform, exact from 256-bin histograms; and the number of images used."""
    picks = np.unique(np.linspace(0, len(files) - 1, num=min(count, len(files))).round().astype(np.int64))
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:  # PIL decodes without the GIL
        counts = sum(pool.map(lambda i: _histograms(root, files[i], resize, size), picks.tolist()))
    means, stds = histogram_stats(counts)
    return means, stds, int(picks.size)


def prepare_stream(cfg: DataConfig, out_dir: Path, indexed: IndexedDataset, workers: int) -> dict[str, Any]:
    """``workers``: threads that hash and sample the files (params ``runtime.workers``)."""
    root = Path(cfg.root)
    size = cfg.image_size
    assert size is not None  # DataConfig fills it for every streamable dataset
    resize = cfg.resize_for_eval()
    splits = {"train": indexed.train, "test": indexed.test}
    total = sum(len(s.files) for s in splits.values())
    indexes: dict[str, dict[str, torch.Tensor]] = {}
    what = "hashing" if cfg.index_hash == "sha256" else "listing"
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"prepare: {what} {total:,} files", total=total)
        for split, files in splits.items():
            indexes[split] = build_index(root, files, cfg.index_hash, workers,
                                         advance=lambda k: progress.advance(task, k))

    if indexed.mean is not None and indexed.std is not None:
        mean, std, stats_from = list(indexed.mean), list(indexed.std), indexed.stats_from or "published"
    else:
        mean, std, used = sample_stats(root, decode_files(indexes["train"]["files"]), resize, size, workers)
        stats_from = f"train sample ({used} images, eval transform)"
    num_classes = len(indexed.class_names)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "storage": "stream",
        "name": cfg.name,
        "num_classes": num_classes,
        "class_names": list(indexed.class_names),
        "channels": CHANNELS,
        "image_size": int(size),
        "eval_resize": int(resize),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "stats_from": stats_from,
        # The in-memory augmentation keys, kept valid for every reader of meta.json: the streamed
        # recipe crops by RandomResizedCrop, not by padding.
        "crop_padding": 0,
        "hflip": True,
        "train_transform": TRAIN_TRANSFORM,
        "eval_transform": EVAL_TRANSFORM,
        "root": cfg.root,
        "index_hash": cfg.index_hash,
        "counts": {split: int(indexes[split]["labels"].numel()) for split in SPLITS},
        "class_counts": {split: torch.bincount(indexes[split]["labels"], minlength=num_classes).tolist()
                         for split in SPLITS},
        "bytes": {split: int(indexes[split]["sizes"].sum()) for split in SPLITS},
        "train_limit": cfg.train_limit,
        "test_limit": cfg.test_limit,
        "content_sha256": {split: sha256_state_dict(indexes[split]) for split in SPLITS},
        **indexed.extra,
        "params": {"data": cfg.model_dump(mode="json")},  # what it was prepared from (r2kd/recorded.py)
    }

    return write_prepared(out_dir, indexes, meta)
