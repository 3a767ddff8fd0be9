"""A fast in-memory batch iterator with the base augmentation (random crop + horizontal flip).

The whole uint8 dataset sits on the target device; a batch is one gather (:func:`crop_flip`). Zero
padding is applied to the uint8 image before normalisation, as torchvision's RandomCrop(padding=p)
on the PIL image does in the standard CIFAR recipe (a black border, not a mean-coloured one).

Every random number (permutation, offsets, flips) is drawn on the CPU from the caller's generator
at the start of each epoch, in that order, so one seed gives the same batches on any device and
however many batches a consumer actually takes.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def crop_flip(images: Tensor, offsets: Tensor, flips: Tensor, padding: int) -> Tensor:
    """Zero-pad by ``padding`` and cut an H x W window at ``offsets`` (B x 2: dy, dx in
    [0, 2 * padding]), mirrored left-right where ``flips`` (B, bool) is true. Works on any dtype.

    One index computation for the whole batch: output pixel (i, j) of sample b comes from padded
    pixel (dy_b + i, dx_b + j), or (dy_b + i, dx_b + W - 1 - j) when b is flipped."""
    b, c, h, w = images.shape
    if padding > 0:
        images = F.pad(images, (padding, padding, padding, padding))
    hp, wp = images.shape[2], images.shape[3]
    dev = images.device
    rows = offsets[:, 0:1] + torch.arange(h, device=dev)  # B x H
    cols_in_window = torch.arange(w, device=dev).expand(b, w)
    cols_in_window = torch.where(flips[:, None], (w - 1) - cols_in_window, cols_in_window)
    cols = offsets[:, 1:2] + cols_in_window  # B x W
    flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    return torch.gather(images.reshape(b, c, hp * wp), 2, flat).reshape(b, c, h, w)


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else math.ceil(n / batch_size)


class Normalised:
    """What this iterator and r2kd.data.stream.StreamIterator share: the checks of the common
    arguments and the normalisation of uint8 batches on ``device``."""

    def __init__(self, batch_size: int, mean: Sequence[float], std: Sequence[float], channels: int,
                 generator: torch.Generator | None, device: torch.device, drop_last: bool) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need {channels} values (one per channel)")
        if any(s <= 0 for s in std):
            raise ValueError("std values must be positive")
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("the generator must be a CPU generator (draws are made on the CPU)")
        self.batch_size, self.generator, self.drop_last = batch_size, generator, drop_last
        self.device = torch.device(device)
        self.mean, self.std = list(mean), list(std)
        # (x / 255 - mean) / std  ==  x * scale + shift, one fused pass per batch
        std_t = torch.tensor(std, dtype=torch.float32)
        mean_t = torch.tensor(mean, dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1).to(self.device)
        self._shift = (-mean_t / std_t).view(1, -1, 1, 1).to(self.device)

    def normalise(self, images_u8: Tensor) -> Tensor:
        return torch.addcmul(self._shift, images_u8.to(torch.float32), self._scale)


class BatchIterator(Normalised):
    """Iterate (normalised float32 images, int64 labels) batches on ``device``.

    train=True: a fresh permutation each epoch and, per sample, a random crop (zero padding
    ``crop_padding``) and a horizontal flip with p = 0.5 (if ``hflip``). ``generator`` supplies all
    of that randomness (None: torch's global CPU generator). train=False: dataset order, no
    augmentation.
    """

    def __init__(self, images_u8: Tensor, labels: Tensor, *, batch_size: int, mean: Sequence[float],
                 std: Sequence[float], train: bool, generator: torch.Generator | None, crop_padding: int = 0,
                 hflip: bool = False, device: torch.device = torch.device("cpu"), drop_last: bool = False) -> None:
        if images_u8.dtype != torch.uint8 or images_u8.ndim != 4:
            raise ValueError("images_u8 must be a uint8 N x C x H x W tensor")
        if labels.ndim != 1 or labels.shape[0] != images_u8.shape[0]:
            raise ValueError("labels must be a 1-d tensor with one label per image")
        if crop_padding < 0:
            raise ValueError("crop_padding must be non-negative")
        super().__init__(batch_size, mean, std, images_u8.shape[1], generator, device, drop_last)
        self.images = images_u8.to(self.device)
        self.labels = labels.to(self.device, dtype=torch.int64)
        self.train, self.crop_padding, self.hflip = train, crop_padding, hflip

    def subset(self, positions: Tensor, batch_size: int | None = None) -> "BatchIterator":
        """An iterator over the images at ``positions`` (in that order), otherwise configured alike."""
        positions = positions.to(self.device)
        out = object.__new__(BatchIterator)
        out.__dict__.update(self.__dict__)
        out.images, out.labels = self.images[positions], self.labels[positions]
        out.batch_size = batch_size or self.batch_size
        return out

    def __len__(self) -> int:
        return num_batches(self.images.shape[0], self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n, g = self.images.shape[0], self.generator
        order = torch.randperm(n, generator=g) if self.train else torch.arange(n)
        augment = self.train and (self.crop_padding > 0 or self.hflip)
        if augment:  # drawn after the permutation: offsets, then flips
            pad = self.crop_padding
            offsets = (torch.randint(0, 2 * pad + 1, (n, 2), generator=g) if pad > 0
                       else torch.zeros((n, 2), dtype=torch.int64))
            flips = torch.rand(n, generator=g) < 0.5 if self.hflip else torch.zeros(n, dtype=torch.bool)
            offsets, flips = offsets.to(self.device), flips.to(self.device)
        order = order.to(self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self.images[idx]
            if augment:
                end = start + idx.shape[0]
                batch = crop_flip(batch, offsets[start:end], flips[start:end], self.crop_padding)
            yield self.normalise(batch), self.labels[idx]
