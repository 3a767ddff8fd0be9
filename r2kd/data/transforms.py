"""The standard ImageNet transforms of the streaming loader, on PIL images.

Train: RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3), bilinear, antialiased) then a
horizontal flip with p = 0.5. Eval: Resize(resize) of the shorter side then CenterCrop(size).

torchvision's random transforms draw from torch's *global* generator, which differs between
DataLoader workers; :func:`train_view` runs them with that generator forked and seeded with the
sample's own seed (and restored after), so a sample's pixels depend only on its seed, never on which
worker decoded it: torchvision's transforms after ``torch.manual_seed(s)`` give the same image.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

def train_view(img: Image.Image, size: int, seed: int) -> Image.Image:
    recipe = T.Compose([T.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), antialias=True,
                                            interpolation=InterpolationMode.BILINEAR), T.RandomHorizontalFlip(0.5)])
    with torch.random.fork_rng(devices=[]):  # the CPU generator only: the caller's CUDA streams stay untouched
        torch.default_generator.manual_seed(seed)
        return recipe(img)


def eval_view(img: Image.Image, resize: int, size: int) -> Image.Image:
    img = TF.resize(img, resize, InterpolationMode.BILINEAR, antialias=True)
    return TF.center_crop(img, [size, size])


def to_chw(img: Image.Image) -> np.ndarray:
    """uint8 C x H x W (contiguous) of an RGB image."""
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
