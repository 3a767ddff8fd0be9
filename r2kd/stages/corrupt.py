"""Stage `corrupt`: the prepared test split under the 15 CIFAR-10-C corruptions x 5 severities,
drawn once per data set (seeded, deterministic) and written to data/corrupted/ (docs/robustness.md).

With ``evaluate.corruptions: false`` it writes an empty set (no corruptions), so the pipeline's
files exist either way and `evaluate` skips the corruption scores. A streamed data set (ImageNet)
has no decoded test split to corrupt: there ``evaluate.corruptions: true`` is a ConfigError.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from r2kd import paths
from r2kd.config import Params
from r2kd.corruptions import CORRUPTIONS, FAMILIES, SEVERITIES, WORK_SIZE, corrupt_set
from r2kd.data.corrupted import FORMAT
from r2kd.data.prepared import load_meta, load_prepared, storage_of
from r2kd.errors import ConfigError
from r2kd.files import Ticker, save_checkpoint, sha256_state_dict, write_json
from r2kd.recorded import params_record
from r2kd.workers import cpu_workers


def select(labels: torch.Tensor, limit: int | None) -> np.ndarray:
    """The first ``limit`` test images of every class, in test-split order (all if limit is None)."""
    labels_np = labels.numpy()
    if limit is None:
        return np.arange(len(labels_np))
    keep, seen = [], {}
    for i, label in enumerate(labels_np.tolist()):
        if seen.get(label, 0) < limit:
            seen[label] = seen.get(label, 0) + 1
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def build(images: torch.Tensor, labels: torch.Tensor, enabled: bool, limit: int | None, seed: int,
          workers: int = 1, on_done=None) -> tuple[dict, tuple[str, ...]]:
    if not enabled:
        index, corrupted = np.zeros(0, dtype=np.int64), torch.zeros((0, 0, 0, *images.shape[1:]), dtype=torch.uint8)
    else:
        index = select(labels, limit)
        corrupted = torch.from_numpy(corrupt_set(images.numpy()[index], index, seed, workers, on_done))
    payload = {"images": corrupted, "labels": labels[torch.from_numpy(index)].clone(), "index": torch.from_numpy(index)}
    return payload, CORRUPTIONS if enabled else ()


def _test_split(meta: dict, enabled: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoded test split, or for a streamed set with corruptions off an empty stand-in."""
    if storage_of(meta) == "memory":
        prepared = load_prepared(paths.PREPARED)
        return prepared.test_images, prepared.test_labels
    if enabled:
        raise ConfigError(
            f"evaluate.corruptions: true needs the decoded test images, but data/prepared holds a streamed "
            f"data set ({meta['name']}, storage: stream; its 15 corruptions x 5 severities would not fit in memory "
            "either); set evaluate.corruptions: false"
        )
    size = meta["image_size"]
    return torch.zeros((0, meta["channels"], size, size), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)


def run(params: Params) -> None:
    cfg = params.evaluate
    meta = load_meta(paths.PREPARED)
    images, labels = _test_split(meta, cfg.corruptions)
    began = time.perf_counter()
    # Each image's corruption is a function of its own seed, so processes change no byte
    # (r2kd/workers.py; tests/test_robustness.py).
    workers = cpu_workers(torch.device("cpu"), params.runtime.threads)
    count = len(select(labels, cfg.corruption_limit)) if cfg.corruptions else 0
    with Ticker(len(CORRUPTIONS) if cfg.corruptions else 0,
                f"corrupt: {count:,} test images x {len(CORRUPTIONS)} corruptions x {len(SEVERITIES)} severities") as ticker:
        payload, names = build(images, labels, cfg.corruptions, cfg.corruption_limit, cfg.corruption_seed, workers,
                               ticker.advance)
    save_checkpoint(paths.CORRUPTED_TEST, payload)
    size = meta["image_size"]
    write_json(paths.CORRUPTED_META, {
        "format": FORMAT, "dataset": meta["name"], "corruptions": list(names),
        "families": {f: list(n) for f, n in FAMILIES.items()} if names else {},
        "severities": list(SEVERITIES) if names else [],
        "seed": cfg.corruption_seed, "limit_per_class": cfg.corruption_limit, "count": int(payload["labels"].numel()),
        # spatial corruptions run at 32 x 32 for smaller images (r2kd/corruptions.py)
        "image_size": size, "work_size": max(size, WORK_SIZE),
        "source_sha256": meta["content_sha256"]["test"], "content_sha256": sha256_state_dict(payload),
        "params": params_record(params, "corrupt"),
    })
    print(f"corrupt: {payload['labels'].numel()} test images x {len(names)} corruptions x "
          f"{len(SEVERITIES) if names else 0} severities in {time.perf_counter() - began:.1f} s")
