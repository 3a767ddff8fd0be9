"""The prepared data set as the training and scoring stages use it: its meta data, train and test
batch iterators on the device, and the files it was read from (for provenance). Decoded sets are
served from memory (:class:`BatchIterator`), streamed sets (meta.json ``storage: stream``, e.g.
ImageNet) by :class:`StreamIterator` with ``workers`` DataLoader processes; both iterate the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import torch

from r2kd import paths
from r2kd.config import Runtime
from r2kd.data.loader import BatchIterator
from r2kd.data.prepared import load_index, load_meta, load_prepared, storage_of

if TYPE_CHECKING:
    # The streaming loader imports torchvision, which imports torch._dynamo: 1.6 s per stage process
    # on the 2-core CPU, paid by every stage of an in-memory run (the embedded default) for nothing.
    from r2kd.data.stream import StreamIterator

Batches = Union[BatchIterator, "StreamIterator"]
DEFAULT_WORKERS: int = Runtime.model_fields["workers"].default


@dataclass
class Data:
    meta: dict
    train: Batches
    test: Batches
    files: list[Path]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.meta["channels"], self.meta["image_size"], self.meta["image_size"])


def stream_iterators(out_dir: Path, meta: dict, batch_size: int, device: torch.device,
                     generator: torch.Generator | None, workers: int) -> tuple[StreamIterator, StreamIterator]:
    from r2kd.data.index import decode_files
    from r2kd.data.stream import StreamDataset, StreamIterator

    out = []
    for split, train in (("train", True), ("test", False)):
        index = load_index(out_dir, split, meta)
        dataset = StreamDataset(Path(meta["root"]), decode_files(index["files"]), index["labels"], index["sizes"],
                                index["sha256"], train=train, image_size=meta["image_size"],
                                eval_resize=meta["eval_resize"])
        out.append(StreamIterator(dataset, batch_size=batch_size, mean=meta["mean"], std=meta["std"], train=train,
                                  generator=generator if train else None, device=device, workers=workers))
    return out[0], out[1]


def load_data(batch_size: int, device: torch.device, generator: torch.Generator | None, *,
              workers: int = DEFAULT_WORKERS) -> Data:
    """``workers``: DataLoader processes of a streamed set (params ``runtime.workers``); unused in memory."""
    meta = load_meta(paths.PREPARED)
    if storage_of(meta) == "stream":
        train, test = stream_iterators(paths.PREPARED, meta, batch_size, device, generator, workers)
    else:
        prepared = load_prepared(paths.PREPARED)
        common = dict(batch_size=batch_size, mean=meta["mean"], std=meta["std"], device=device)
        train = BatchIterator(prepared.train_images, prepared.train_labels, train=True, generator=generator,
                              crop_padding=meta["crop_padding"], hflip=meta["hflip"], **common)
        test = BatchIterator(prepared.test_images, prepared.test_labels, train=False, generator=None, **common)
    return Data(meta=meta, train=train, test=test, files=data_files())


def data_files() -> list[Path]:
    """The prepared files every stage that reads the data records the hashes of."""
    return [paths.PREPARED / "train.pt", paths.PREPARED / "test.pt", paths.PREPARED / "meta.json"]
