"""``prepare`` for a streamed dataset: an index of the source files (:mod:`r2kd.data.index`), not their
pixels, in the same three files as the in-memory format, with ``storage: stream`` in meta.json.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from r2kd.config import DataConfig
from r2kd.data.index import build_index, decode_files
from r2kd.data.prepared import SPLITS, write_prepared
from r2kd.data.registry import IndexedDataset
from r2kd.data.transforms import eval_view, to_chw
from r2kd.data.storage import CHANNELS, histogram_stats
from r2kd.errors import DataError

# Train images whose pixels give mean/std when no published statistics exist (evenly spaced over the
# sorted index, so the same every run): 1,000 pins each mean to about +-0.005 on natural images.
STATS_SAMPLE = 1000
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
                 count: int = STATS_SAMPLE) -> tuple[list[float], list[float], str]:
    """Per-channel mean and population std (in [0, 1]) of up to ``count`` evenly spaced train images
    after the eval transform, exact from 256-bin histograms; and meta.json's ``stats_from``."""
    picks = np.unique(np.linspace(0, len(files) - 1, num=min(count, len(files))).round().astype(np.int64))
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:  # PIL decodes without the GIL
        counts = sum(pool.map(lambda i: _histograms(root, files[i], resize, size), picks.tolist()))
    means, stds = histogram_stats(counts)
    return means, stds, f"train sample ({picks.size} images, eval transform)"


def prepare_stream(cfg: DataConfig, out_dir: Path, indexed: IndexedDataset, workers: int) -> dict[str, Any]:
    """``workers``: threads that hash and sample the files (params ``runtime.workers``)."""
    root, size, resize = Path(cfg.root), cfg.image_size, cfg.resize_for_eval()
    assert size is not None  # DataConfig fills it for every streamable dataset
    splits = {"train": indexed.train, "test": indexed.test}
    total = sum(len(s.files) for s in splits.values())
    what = "hashing" if cfg.index_hash == "sha256" else "listing"
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"prepare: {what} {total:,} files", total=total)
        indexes = {split: build_index(root, files, cfg.index_hash, workers, advance=lambda k: progress.advance(task, k))
                   for split, files in splits.items()}
    return write_prepared(
        cfg, out_dir, indexed, indexes,
        lambda: sample_stats(root, decode_files(indexes["train"]["files"]), resize, size, workers),
        storage="stream", channels=CHANNELS, image_size=int(size), eval_resize=int(resize),
        # The in-memory augmentation keys, kept valid for every reader of meta.json: the streamed
        # recipe crops by RandomResizedCrop, not by padding.
        crop_padding=0, hflip=True, train_transform=TRAIN_TRANSFORM, eval_transform=EVAL_TRANSFORM,
        root=cfg.root, index_hash=cfg.index_hash, bytes={split: int(indexes[split]["sizes"].sum()) for split in SPLITS},
    )
