"""MNIST, Kuzushiji-MNIST and Fashion-MNIST from their IDX files.

Files go where torchvision puts them: ``<root>/MNIST/raw/``, ``<root>/KMNIST/raw/``,
``<root>/FashionMNIST/raw/``, each holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, gzip-compressed (``.gz``, used when present)
or not. A file is verified by its contents: see :func:`read_verified`. With
``data.download: true`` the missing ``.gz`` files are fetched from torchvision's mirrors with
torchvision's downloader. Parsing is :mod:`r2kd.data.idx`.

Base augmentation: crop padding 2 (28 px images; about CIFAR's 4/32), no flips (mirrored
digits, kana and most garments change meaning or are not in the data).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from r2kd.config import DataConfig
from r2kd.data.idx import decompress, parse_idx
from r2kd.data.registry import RawDataset, register
from r2kd.data.sources import fetch, link_note, shown
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


@dataclass(frozen=True)
class Sums:
    """Published MD5s of one IDX file: of the official ``.gz`` and of its decompressed contents.

    ``raw`` is None where no published value is known for certain; a file is then verifiable only
    through the official ``.gz``.
    """

    gz: str | None
    raw: str | None = None


def _table(folder: str, sums: tuple[Sums, Sums, Sums, Sums]) -> dict[str, str]:
    """Flatten to {path relative to data.root: MD5}: ``<name>.gz`` for gz sums, ``<name>`` for raw ones."""
    table = {}
    for name, entry in zip(FILES, sums):
        if entry.gz:
            table[f"{folder}/raw/{name}.gz"] = entry.gz
        if entry.raw:
            table[f"{folder}/raw/{name}"] = entry.raw
    return table


# Published MD5s of the .gz files (torchvision's). The MD5s of the decompressed files are not
# published by torchvision or the dataset pages r2kd draws on, so none are listed: add them as
# Sums(gz, raw) once sourced, and repackaged or uncompressed copies verify through them.
MNIST_MD5 = _table("MNIST", (
    Sums("f68b3c2dcbeaaa9fbdd348bbdeb94873"), Sums("d53e105ee54ea40749a09fcbcd1e9432"),
    Sums("9fb629c4189551a2d022fa330f9573f3"), Sums("ec29112dd5afa0611ce80d1b7f02629c"),
))
KMNIST_MD5 = _table("KMNIST", (
    Sums("bdb82020997e1d708af4cf47b453dcf7"), Sums("e144d726b3acfaa3e44228e80efcd344"),
    Sums("5c965bf0a639b31b8f53240b1b52f4d7"), Sums("7320c461ea6c1c855c0b718fb2a4b134"),
))
FASHION_MNIST_MD5 = _table("FashionMNIST", (
    Sums("8d4fb7e6c68d591d4c3dfef9ec88bf0d"), Sums("25c81989df183df01b3e8a0aad5dffbe"),
    Sums("bef4ecab320f06d8554ea6380940ec79"), Sums("bb300cfdad3c16e7a12a480ee83cd310"),
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


def read_verified(
    layout: IdxLayout, path: Path, rel: str, checksums: Mapping[str, str], ndim: int
) -> tuple[np.ndarray, str]:
    """Return (the parsed IDX array, SHA-256 of the file) once the file matches a known sum.

    The structure is parsed first: "truncated" says more than an MD5 mismatch does.

    The contents decide, not the packaging: a ``.gz`` is accepted when its own MD5 is the official
    one OR its decompressed contents have the official uncompressed MD5 (a re-gzipped copy); a
    plain file when its MD5 is the official uncompressed one.
    """
    raw_rel = rel.removesuffix(".gz")
    gz_sum, raw_sum = checksums.get(raw_rel + ".gz"), checksums.get(raw_rel)
    try:
        packed = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    sha = hashlib.sha256(packed).hexdigest()
    file_md5 = hashlib.md5(packed, usedforsecurity=False).hexdigest()
    data = decompress(packed, str(path)) if rel.endswith(".gz") else packed
    array = parse_idx(data, str(path), ndim)
    data_md5 = hashlib.md5(data, usedforsecurity=False).hexdigest() if data is not packed else file_md5
    if gz_sum is None and raw_sum is None:
        return array, sha  # a dataset without published sums (none today; tests may inject none)
    if (rel.endswith(".gz") and gz_sum and file_md5 == gz_sum.lower()) or (raw_sum and data_md5 == raw_sum.lower()):
        return array, sha
    found = f"MD5 {file_md5}" + (f", decompressed {data_md5}" if data is not packed else "")
    wanted = " or ".join(
        [f"{gz_sum} for the .gz"] * bool(gz_sum) + [f"{raw_sum} for the decompressed contents"] * bool(raw_sum)
    )
    root_dir = shown(path.parent)
    if raw_sum:
        place = (f"Place the official {Path(raw_rel).name}.gz at {root_dir}/{Path(raw_rel).name}.gz, or any "
                 f"gzip or plain copy whose contents have MD5 {raw_sum}")
    else:
        place = (f"Place the official {Path(raw_rel).name}.gz (MD5 {gz_sum}) at {root_dir}/{Path(raw_rel).name}.gz "
                 "(it is used before a plain file); no published MD5 of the uncompressed file is known, so an "
                 "uncompressed or re-compressed copy cannot be verified")
    raise DataError(
        f"{path} is corrupt or not the official file: {found}; expected {wanted}. {place}.{link_note(path)} "
        f"The official files are at {layout.mirrors[0]}."
    )


def build_idx(layout: IdxLayout, cfg: DataConfig, checksums: Mapping[str, str]) -> RawDataset:
    arrays, sources = {}, {}
    for name in FILES:
        path, rel = _locate(layout, cfg, name, checksums)
        arrays[name], sources[rel] = read_verified(layout, path, rel, checksums, ndim=3 if "images" in name else 1)

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
