"""The standard ImageNet transforms of the streaming loader, on PIL images, driven by an explicit generator.

Train: RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3), bilinear, antialiased) then a
horizontal flip with p = 0.5. Eval: Resize(resize) of the shorter side then CenterCrop(size).

torchvision's random transforms draw from torch's *global* generator, which differs between
DataLoader workers; here every draw comes from a per-sample generator seeded by the loader, so a
sample's pixels depend only on its seed, never on which worker decoded it. The draws are the ones
torchvision makes, in its order: with ``torch.manual_seed(s)`` torchvision's
``Compose([RandomResizedCrop, RandomHorizontalFlip])`` gives the same image as :func:`train_view`
with ``torch.Generator().manual_seed(s)`` (tests/test_stream.py checks it).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)


def random_resized_crop_params(width: int, height: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the crop, as torchvision's RandomResizedCrop.get_params draws it."""
    area, scale, ratio = height * width, SCALE, RATIO
    # float32 tensors, as torchvision computes them, so the crops agree to the pixel
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            j = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return i, j, h, w
    # Fallback: the central crop with the ratio clamped into range (torchvision's rule).
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def train_view(img: Image.Image, size: int, generator: torch.Generator) -> Image.Image:
    i, j, h, w = random_resized_crop_params(img.width, img.height, generator)
    img = TF.resized_crop(img, i, j, h, w, [size, size], InterpolationMode.BILINEAR, antialias=True)
    if torch.rand(1, generator=generator) < 0.5:
        img = TF.hflip(img)
    return img


def eval_view(img: Image.Image, resize: int, size: int) -> Image.Image:
    img = TF.resize(img, resize, InterpolationMode.BILINEAR, antialias=True)
    return TF.center_crop(img, [size, size])


def to_chw(img: Image.Image) -> np.ndarray:
    """uint8 C x H x W (contiguous) of an RGB image."""
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
