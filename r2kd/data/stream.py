"""The streaming batch iterator: decodes JPEGs (or any PIL image) with DataLoader workers each epoch.

Same interface as :class:`r2kd.data.loader.BatchIterator` as the Trainer and the scoring code use
it. At the start of each training epoch the permutation and then one 62-bit seed per sample are
drawn from the caller's CPU generator; a worker builds each sample from (file, seed) alone
(r2kd/data/transforms.py), so the batches are the same for any ``workers`` and any prefetching, and
the generator's state after an epoch (what the Trainer saves) fixes every later epoch exactly.
Every read is checked against the index (r2kd/data/index.py). In a multi-process run each rank
decodes only its shard of the global batch and the uint8 shards are all-gathered
(docs/distributed.md). docs/data.md, "Streaming", has the rest.
"""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from r2kd.data.index import check_file_bytes
from r2kd.data.loader import Normalised, num_batches
from r2kd.data.transforms import eval_view, to_chw, train_view
from r2kd.distributed import World, all_true, gather_rows, shard_bounds, world
from r2kd.errors import DataError

SEED_HIGH = 2**62


class StreamDataset(Dataset):
    """Indexable by (position, seed): the decoded, transformed uint8 image and its label."""

    def __init__(self, root: Path, files: Sequence[str], labels: Tensor, sizes: Tensor, sha256: Tensor, *,
                 train: bool, image_size: int, eval_resize: int) -> None:
        self.root = Path(root)
        # Fixed-width byte arrays rather than lists of str: forked workers then share the pages
        # (touching a Python object's refcount would copy them, a known DataLoader memory leak).
        self.files = np.array([f.encode("utf-8") for f in files], dtype=np.bytes_)
        self.labels = labels.numpy().astype(np.int64, copy=True)
        self.sizes = sizes.numpy().astype(np.int64, copy=True)
        self.sha256 = sha256.numpy().astype(np.uint8, copy=True)
        self.train, self.image_size, self.eval_resize = train, image_size, eval_resize

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, positions: Tensor) -> "StreamDataset":
        idx = positions.cpu().numpy()
        out = object.__new__(StreamDataset)
        out.__dict__.update(self.__dict__)
        out.__dict__.update({key: getattr(self, key)[idx] for key in ("files", "labels", "sizes", "sha256")})
        return out

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor | None, int | str]:
        """(image, label), or (None, message) for a file that fails its checks: the batch carries the
        error to the training process, which raises it there with its own message (an exception
        raised inside a worker arrives wrapped in a worker traceback, and leaves the pool slow to
        shut down)."""
        try:
            return self._load(*item)
        except DataError as exc:
            return None, str(exc)

    def _load(self, i: int, seed: int) -> tuple[Tensor, int]:
        from PIL import Image

        path = self.root / self.files[i].decode("utf-8")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}; rerun prepare if the dataset moved") from None
        check_file_bytes(path, data, int(self.sizes[i]), self.sha256[i])
        try:
            with Image.open(io.BytesIO(data)) as img:
                rgb = img.convert("RGB")  # decodes fully: a truncated file fails here
        except Exception as exc:  # UnidentifiedImageError, OSError("image file is truncated"), ...
            raise DataError(f"{path} is not a readable image: {exc}") from None
        if self.train:
            view = train_view(rgb, self.image_size, seed)
        else:
            view = eval_view(rgb, self.eval_resize, self.image_size)
        return torch.from_numpy(to_chw(view)), int(self.labels[i])


class _EpochBatches:
    """A batch sampler over one epoch's plan: lists of (position, seed), made lazily; with a
    multi-process ``shard``, only this rank's rows of each global batch."""

    def __init__(self, order: Tensor, seeds: Tensor, batch_size: int, drop_last: bool,
                 shard: World | None = None) -> None:
        self.order, self.seeds, self.batch_size, self.drop_last = order, seeds, batch_size, drop_last
        self.shard = shard

    def __len__(self) -> int:
        return num_batches(self.order.numel(), self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            stop = start + self.batch_size
            if self.shard is not None:
                bounds = shard_bounds(min(stop, self.order.numel()) - start, self.shard)
                start, stop = start + bounds[self.shard.rank], start + bounds[self.shard.rank + 1]
            yield list(zip(self.order[start:stop].tolist(), self.seeds[start:stop].tolist()))


def _collate(image_size: int, samples: list[tuple[Tensor | None, int | str]]) -> tuple[Tensor | None, Tensor | str]:
    failed = next((message for image, message in samples if image is None), None)
    if failed is not None:
        return None, failed
    if not samples:  # an empty shard (a last batch with fewer rows than ranks)
        return torch.empty((0, 3, image_size, image_size), dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
    return torch.stack([s[0] for s in samples]), torch.tensor([s[1] for s in samples], dtype=torch.int64)


class StreamIterator(Normalised):
    """Iterate (normalised float32 images, int64 labels) batches of a :class:`StreamDataset` on ``device``.

    train=True: a fresh permutation and per-sample transform seeds each epoch from ``generator``
    (None: torch's global CPU generator). train=False: dataset order, the eval transform.
    """

    def __init__(self, dataset: StreamDataset, *, batch_size: int, mean: Sequence[float], std: Sequence[float],
                 train: bool, generator: torch.Generator | None, device: torch.device = torch.device("cpu"),
                 workers: int = 0, drop_last: bool = False) -> None:
        if workers < 0:
            raise ValueError("workers must be >= 0")
        if dataset.train != train:
            raise ValueError("the dataset's transform (train/eval) does not match train=")
        super().__init__(batch_size, mean, std, 3, generator, device, drop_last)
        self.dataset, self.train, self.workers = dataset, train, workers

    @property
    def labels(self) -> Tensor:
        """Every label in dataset order (the iteration order of an eval iterator), on ``device``."""
        return torch.from_numpy(self.dataset.labels).to(self.device)

    def __len__(self) -> int:
        return num_batches(len(self.dataset), self.batch_size, self.drop_last)

    def subset(self, positions: Tensor, batch_size: int | None = None) -> "StreamIterator":
        """An eval iterator over the images at ``positions`` (in that order)."""
        return StreamIterator(self.dataset.subset(positions), batch_size=batch_size or self.batch_size,
                              mean=self.mean, std=self.std, train=self.train, generator=self.generator,
                              device=self.device, workers=self.workers, drop_last=self.drop_last)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.dataset)
        if self.train:  # drawn now, whole, however many batches the consumer takes
            order = torch.randperm(n, generator=self.generator)
            seeds = torch.randint(0, SEED_HIGH, (n,), generator=self.generator)
        else:
            order, seeds = torch.arange(n), torch.zeros(n, dtype=torch.int64)
        cuda = self.device.type == "cuda"
        w = world()
        batches = _EpochBatches(order, seeds, self.batch_size, self.drop_last, shard=w if w.distributed else None)
        loader = DataLoader(self.dataset, batch_sampler=batches, num_workers=self.workers,
                            collate_fn=partial(_collate, self.dataset.image_size), pin_memory=cuda)
        for k, (images, labels) in enumerate(loader):
            if w.distributed:
                # Every rank must learn of a bad file before the gather, or the others would wait
                # in it forever; the rank that read it names it.
                if not all_true(images is not None):
                    raise DataError(labels if images is None else "another process of this run could not "
                                    "read a file of this batch (its error names it)")
                # The other ranks' labels are known from the plan; only pixels travel.
                rows = order[k * self.batch_size:(k + 1) * self.batch_size]
                labels = torch.from_numpy(self.dataset.labels[rows.numpy()])
            elif images is None:
                raise DataError(labels)
            images = images.to(self.device, non_blocking=cuda)
            labels = labels.to(self.device, non_blocking=cuda)
            if w.distributed:
                images = gather_rows(images, labels.shape[0])
            yield self.normalise(images), labels
