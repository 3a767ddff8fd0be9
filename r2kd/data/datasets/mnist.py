"""MNIST, Kuzushiji-MNIST and Fashion-MNIST from their IDX files (parsed by :mod:`r2kd.data.idx`).

Looked for in torchvision's folders (``<root>/MNIST/raw/`` ...) and then straight in ``<root>``,
``.gz`` before plain; each file is verified by its contents (:func:`read_verified`). docs/data.md,
"mnist, kmnist, fashion_mnist". Base augmentation: crop padding 2 (28 px images; about CIFAR's
4/32), no flips (mirrored digits, kana and most garments change meaning or are not in the data).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from r2kd.config import DataConfig
from r2kd.data.idx import decompress, parse_idx
from r2kd.data.registry import RawDataset, register
from r2kd.data.sources import check_pin, fetch, link_note, official, shown, unverified_error
from r2kd.errors import DataError

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class IdxLayout:
    name: str
    folder: str  # torchvision's class name, which is its folder name
    mirrors: tuple[str, ...]
    class_names: tuple[str, ...]


MNIST = IdxLayout(
    "mnist", "MNIST", ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
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
    """Published MD5s of one IDX file: of the official ``.gz`` and of its decompressed contents (``raw``
    None where none is known for certain: the file is then verifiable only as the official ``.gz`` or by a pin)."""

    gz: str | None
    raw: str | None = None


def _table(folder: str, sums: tuple[Sums, Sums, Sums, Sums]) -> dict[str, str]:
    """Flatten to {path relative to data.root: MD5}: ``<name>.gz`` for gz sums, ``<name>`` for raw ones."""
    pairs = [(f"{folder}/raw/{name}{suffix}", md5) for name, entry in zip(FILES, sums)
             for suffix, md5 in ((".gz", entry.gz), ("", entry.raw))]
    return {rel: md5 for rel, md5 in pairs if md5}


# MD5s of the official .gz files: torchvision's (torchvision/datasets/mnist.py, `resources`; a test
# checks they are equal). MD5s of the decompressed contents, so that a re-gzipped or unpacked copy (a
# distribution's package, a mirror) verifies by what it holds, each from two or more public places:
# - MNIST: prabhuomkar/pytorch-cpp cmake/fetch_mnist.cmake (MNIST_EXTRACTED_FILE_MD5S, checked on the
#   gunzipped files; its MNIST_ARCHIVE_MD5S are torchvision's .gz sums), and, in other public
#   repositories, a bash download script's MNIST_EXTRACTED_FILES_MD5 table for the ossci-datasets
#   mirror, a dataset config listing them with the uncompressed sizes 47040016 / 60008 / 7840016 /
#   10008 bytes, and a paper's prepare_datasets.py ("MD5 checksums of the uncompressed files").
# - Fashion-MNIST: a torchvision-based FashionMNIST ImageFolder class in public repositories
#   (`raw_data`, checked with check_integrity after download_and_extract_archive, next to
#   torchvision's .gz sums as `resources`), the same prepare_datasets.py, and a tutorial's `md5sum`
#   output after `gunzip *`.
# - KMNIST: no published MD5 of the decompressed files was found in two independent places, so none
#   is listed: a re-compressed or plain KMNIST copy is verified by the user's data.checksums pin
#   (the refusal says what to add). Never add a sum computed here from a local copy.
MNIST_MD5 = _table("MNIST", (
    Sums("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
    Sums("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
    Sums("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
    Sums("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
))
KMNIST_MD5 = _table("KMNIST", (
    Sums("bdb82020997e1d708af4cf47b453dcf7"), Sums("e144d726b3acfaa3e44228e80efcd344"),
    Sums("5c965bf0a639b31b8f53240b1b52f4d7"), Sums("7320c461ea6c1c855c0b718fb2a4b134"),
))
FASHION_MNIST_MD5 = _table("FashionMNIST", (
    Sums("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    Sums("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    Sums("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    Sums("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
))


def _locate(layout: IdxLayout, cfg: DataConfig, name: str, checksums: Mapping[str, str]) -> tuple[Path, str]:
    root = Path(cfg.root)
    raw_rel = f"{layout.folder}/raw/{name}"
    # torchvision's folders first, then the files straight in data.root, as a distribution's package
    # installs them (e.g. Debian's dataset-fashion-mnist: /usr/share/datasets/fashion-mnist/*.gz)
    for rel in (raw_rel + ".gz", raw_rel, name + ".gz", name):
        if (root / rel).is_file():
            return root / rel, rel
    rel, urls = raw_rel + ".gz", [m + name + ".gz" for m in layout.mirrors]
    return fetch(layout.name, root, rel, urls, cfg.download, checksums.get(rel)), rel


def read_verified(layout: IdxLayout, path: Path, rel: str, checksums: Mapping[str, str], ndim: int,
                  pins: Mapping[str, str]) -> tuple[np.ndarray, str, dict[str, str]]:
    """Return (the parsed IDX array, SHA-256 of the file, who verified it) once a hash vouches for it:
    its pin (a pinned file must match it), else the official MD5 of the ``.gz`` or of the decompressed
    contents (docs/data.md). The structure is parsed first: "truncated" says more than an MD5 mismatch."""
    name = Path(rel.removesuffix(".gz")).name
    official_rel = f"{layout.folder}/raw/{name}"  # the sums are the file's, wherever it was found
    gz_sum, raw_sum = checksums.get(official_rel + ".gz"), checksums.get(official_rel)
    try:
        packed = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    sha = hashlib.sha256(packed).hexdigest()
    compressed = rel.endswith(".gz")
    data = decompress(packed, str(path)) if compressed else packed
    array = parse_idx(data, str(path), ndim)
    pinned = check_pin(path, rel, sha, pins)
    if pinned is not None:
        return array, sha, pinned
    file_md5 = hashlib.md5(packed, usedforsecurity=False).hexdigest()
    data_md5 = hashlib.md5(data, usedforsecurity=False).hexdigest() if compressed else file_md5
    if compressed and gz_sum and file_md5 == gz_sum.lower():
        return array, sha, official("MD5 of the official .gz")
    if raw_sum and data_md5 == raw_sum.lower():
        return array, sha, official("MD5 of the official decompressed contents")
    directory = shown(path.parent)
    if raw_sum:
        what = f"its decompressed contents have MD5 {data_md5}" if compressed else f"it has MD5 {data_md5}"
        found = (f"{what}; the official {name} has {raw_sum}: these are not the official contents "
                 f"(a damaged file or another version).")
        fix = (f"place the official {name}.gz (MD5 {gz_sum}) at {directory}/{name}.gz, or any gzip or plain "
               f"copy whose contents have MD5 {raw_sum}.")
    else:
        if compressed and gz_sum:
            found = (f"MD5 {file_md5} is not that of the official {name}.gz ({gz_sum}), and no hash of the "
                     f"decompressed contents of {layout.name} files is published, so a re-compressed copy "
                     f"cannot be checked against the official release (decompressed MD5 {data_md5}).")
        else:
            found = (f"no hash of the uncompressed {name} of {layout.name} is published (only of the official "
                     f"{name}.gz, MD5 {gz_sum}), so this copy cannot be checked against the official release "
                     f"(MD5 {data_md5}).")
        fix = (f"place the official {name}.gz (MD5 {gz_sum}) at {directory}/{name}.gz (it is used before a "
               f"plain file).")
    raise unverified_error(path, rel, sha, found,
                           f"{fix}{link_note(path)} The official files are at {layout.mirrors[0]}.")


def build_idx(layout: IdxLayout, cfg: DataConfig, checksums: Mapping[str, str]) -> RawDataset:
    arrays, sources, verified = {}, {}, {}
    for name in FILES:
        path, rel = _locate(layout, cfg, name, checksums)
        arrays[name], sources[rel], verified[rel] = read_verified(
            layout, path, rel, checksums, ndim=3 if "images" in name else 1, pins=cfg.checksums)
    images = {p: torch.from_numpy(arrays[f"{p}-images-idx3-ubyte"].copy()).unsqueeze(1) for p in ("train", "t10k")}
    labels = {p: torch.from_numpy(arrays[f"{p}-labels-idx1-ubyte"].astype("int64")) for p in ("train", "t10k")}
    return RawDataset(images["train"], labels["train"], images["t10k"], labels["t10k"], list(layout.class_names),
                      sources, verified=verified, crop_padding=2, hflip=False)


register("mnist", checksums=MNIST_MD5)(partial(build_idx, MNIST))
register("kmnist", checksums=KMNIST_MD5)(partial(build_idx, KMNIST))
register("fashion_mnist", checksums=FASHION_MNIST_MD5)(partial(build_idx, FASHION_MNIST))
