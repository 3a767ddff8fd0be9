"""The prepared data set as the training and scoring stages use it: its meta data, train and test
batch iterators on the device, and the files it was read from (for provenance)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from r2kd import paths
from r2kd.data.prepared import load_prepared
from r2kd.data.loader import BatchIterator


@dataclass
class Data:
    meta: dict
    train: BatchIterator
    test: BatchIterator
    files: list[Path]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.meta["channels"], self.meta["image_size"], self.meta["image_size"])


def load_data(batch_size: int, device: torch.device, generator: torch.Generator | None) -> Data:
    prepared = load_prepared(paths.PREPARED)
    meta = prepared.meta
    common = dict(batch_size=batch_size, mean=meta["mean"], std=meta["std"], device=device)
    train = BatchIterator(prepared.train_images, prepared.train_labels, train=True, generator=generator,
                          crop_padding=meta["crop_padding"], hflip=meta["hflip"], **common)
    test = BatchIterator(prepared.test_images, prepared.test_labels, train=False, generator=None, **common)
    files = [paths.PREPARED / "train.pt", paths.PREPARED / "test.pt", paths.PREPARED / "meta.json"]
    return Data(meta=meta, train=train, test=test, files=files)
