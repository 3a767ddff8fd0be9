"""MNIST, Kuzushiji-MNIST and Fashion-MNIST from their IDX files.

Files go where torchvision puts them: ``<root>/MNIST/raw/``, ``<root>/KMNIST/raw/``,
``<root>/FashionMNIST/raw/``, each holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, gzip-compressed (``.gz``, preferred: their
MD5s are published and checked) or not (then only the IDX structure can be checked). With
``data.download: true`` the missing ``.gz`` files are fetched from torchvision's mirrors with
torchvision's downloader. Parsing is :mod:`r2kd.data.idx`.

Base augmentation: crop padding 2 (28 px images; about CIFAR's 4/32), no flips (mirrored
digits, kana and most garments change meaning or are not in the data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from r2kd.data.config import DataConfig
from r2kd.data.idx import read_idx
from r2kd.data.registry import RawDataset, register
from r2kd.data.sources import check_file, fetch
from r2kd.errors import DataError

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class IdxLayout:
    name: str
    folder: str  # torchvision's class name, which is its folder name
    mirrors: tuple[str, ...]
    class_names: tuple[str, ...]


MNIST = IdxLayout(
    "mnist",
    "MNIST",
    ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    tuple(str(d) for d in range(10)),
)
KMNIST = IdxLayout(
    "kmnist", "KMNIST", ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
    ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
)
FASHION_MNIST = IdxLayout(
    "fashion_mnist", "FashionMNIST", ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
)


def _md5s(folder: str, sums: tuple[str, str, str, str]) -> dict[str, str]:
    return {f"{folder}/raw/{name}.gz": md5 for name, md5 in zip(FILES, sums)}


# Published MD5s of the .gz files (torchvision's), keyed by path relative to data.root.
MNIST_MD5 = _md5s("MNIST", (
    "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
    "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c",
))
KMNIST_MD5 = _md5s("KMNIST", (
    "bdb82020997e1d708af4cf47b453dcf7", "e144d726b3acfaa3e44228e80efcd344",
    "5c965bf0a639b31b8f53240b1b52f4d7", "7320c461ea6c1c855c0b718fb2a4b134",
))
FASHION_MNIST_MD5 = _md5s("FashionMNIST", (
    "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
    "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310",
))


def _locate(layout: IdxLayout, cfg: DataConfig, name: str, checksums: Mapping[str, str]) -> tuple[Path, str]:
    root = Path(cfg.root)
    raw_rel = f"{layout.folder}/raw/{name}"
    for rel in (raw_rel + ".gz", raw_rel):
        if (root / rel).is_file():
            return root / rel, rel
    rel = raw_rel + ".gz"
    path = fetch(layout.name, root, rel, [m + name + ".gz" for m in layout.mirrors], cfg.download, checksums.get(rel))
    return path, rel


def build_idx(layout: IdxLayout, cfg: DataConfig, checksums: Mapping[str, str]) -> RawDataset:
    arrays, sources = {}, {}
    for name in FILES:
        path, rel = _locate(layout, cfg, name, checksums)
        sources[rel] = check_file(path, rel, checksums)
        arrays[name] = read_idx(path, ndim=3 if "images" in name else 1, source=str(path))

    def split(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = arrays[f"{prefix}-images-idx3-ubyte"], arrays[f"{prefix}-labels-idx1-ubyte"]
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{layout.name}: {prefix} has {images.shape[0]} images but {labels.shape[0]} labels")
        if labels.size and int(labels.max()) >= len(layout.class_names):
            raise DataError(f"{layout.name}: {prefix} labels outside 0..{len(layout.class_names) - 1}")
        return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype("int64"))

    train_images, train_labels = split("train")
    test_images, test_labels = split("t10k")
    return RawDataset(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        class_names=list(layout.class_names),
        sources=sources,
        crop_padding=2,
        hflip=False,
    )


@register("mnist", checksums=MNIST_MD5)
def build_mnist(cfg: DataConfig, checksums: Mapping[str, str]) -> RawDataset:
    return build_idx(MNIST, cfg, checksums)


@register("kmnist", checksums=KMNIST_MD5)
def build_kmnist(cfg: DataConfig, checksums: Mapping[str, str]) -> RawDataset:
    return build_idx(KMNIST, cfg, checksums)


@register("fashion_mnist", checksums=FASHION_MNIST_MD5)
def build_fashion_mnist(cfg: DataConfig, checksums: Mapping[str, str]) -> RawDataset:
    return build_idx(FASHION_MNIST, cfg, checksums)
