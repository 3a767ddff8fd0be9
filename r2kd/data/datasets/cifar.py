"""CIFAR-10 and CIFAR-100 from the official python-format archives.

Files: ``<root>/cifar-10-python.tar.gz`` (or its extracted ``cifar-10-batches-py/``, torchvision's
layout) and ``<root>/cifar-100-python.tar.gz`` (``cifar-100-python/``). Download URLs and the
published MD5s are torchvision's; the MD5s live in module-level dicts so tests can inject the sums
of small archives they build in the same format.

Unpacking is done here rather than by ``torchvision.datasets.CIFAR10`` for two reasons: torchvision
extracts in place (a crash leaves a half tree that looks installed) and unpickles with
``pickle.load`` (any callable). Here only the expected members are
copied (regular files, names we choose: no path tricks, size-capped) into a temporary directory,
each member is checked against its published MD5, and only then is the directory renamed into
place. The members decide: an archive re-packed with identical members is accepted although its
own MD5 differs. Batches are
read with a restricted unpickler (:mod:`r2kd.data.safe_pickle`).
"""

from __future__ import annotations

import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from r2kd.config import DataConfig
from r2kd.data.registry import RawDataset, register
from r2kd.data.safe_pickle import load_cifar_pickle
from r2kd.data.sources import check_file, digests, fetch, install_dir, make_tmp_dir, link_note, offline_fix, shown
from r2kd.errors import DataError


@dataclass(frozen=True)
class CifarLayout:
    name: str
    archive: str
    folder: str
    url: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def members(self) -> tuple[str, ...]:
        return self.train_files + self.test_files + (self.meta_file,)


CIFAR10 = CifarLayout(
    name="cifar10",
    archive="cifar-10-python.tar.gz",
    folder="cifar-10-batches-py",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
    # Per-channel statistics of the 50,000 training images (population std of all pixels). The
    # widely copied (0.2023, 0.1994, 0.2010) is a different statistic, not the pixel std.
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
)

CIFAR100 = CifarLayout(
    name="cifar100",
    archive="cifar-100-python.tar.gz",
    folder="cifar-100-python",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    # The values of the RepDistiller / mdistiller CIFAR-100 recipe that R2KD builds on.
    mean=(0.5071, 0.4867, 0.4408),
    std=(0.2675, 0.2565, 0.2761),
)

# Published MD5s (torchvision's), keyed by path relative to data.root.
CIFAR10_MD5 = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
    "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
    "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
    "cifar-10-batches-py/batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CIFAR100_MD5 = {
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
    "cifar-100-python/train": "16019d7e3df5f24257cddd939b257f8d",
    "cifar-100-python/test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "cifar-100-python/meta": "7973b15100ade9c7d40fb424638fde48",
}


# Far above the largest official member (CIFAR-100 train, ~155 MB): a foreign archive cannot fill the disk.
MAX_MEMBER_BYTES = 512 << 20


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dst: Path, archive: Path) -> None:
    if member.size > MAX_MEMBER_BYTES:
        raise DataError(f"{archive}: member {member.name} is {member.size} bytes; not the official archive")
    src = tar.extractfile(member)
    assert src is not None  # regular files only
    with src, open(dst, "wb") as out:
        while True:
            try:
                block = src.read(1 << 20)
            except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
                raise DataError(f"{archive} is corrupt or truncated: {exc}") from exc
            if not block:
                break
            try:
                out.write(block)
            except OSError as exc:  # a full disk is not a corrupt archive
                raise DataError(f"cannot write {dst}: {exc.strerror or exc}") from exc


def _extract(layout: CifarLayout, archive: Path, root: Path, checksums: Mapping[str, str], archive_md5: str) -> None:
    """Archive -> members checked one by one -> folder renamed into place.

    The members' published MD5s decide: an archive re-packed with identical members (another MD5)
    is accepted, one with any other member is refused and nothing is installed.
    """
    expected_archive = checksums.get(layout.archive)
    repacked = expected_archive is not None and archive_md5 != expected_archive.lower()
    tmp = make_tmp_dir(root, layout.folder)
    try:
        staged = tmp / layout.folder
        staged.mkdir()
        try:
            with tarfile.open(archive, "r:gz") as tar:
                found = {}
                for member in tar.getmembers():
                    parts = member.name.strip("/").split("/")
                    if member.isfile() and len(parts) == 2 and parts[0] == layout.folder and parts[1] in layout.members:
                        found[parts[1]] = member
                for name in layout.members:
                    if name not in found:
                        raise DataError(f"{archive} has no member {layout.folder}/{name}; not the official archive")
                    _copy_member(tar, found[name], staged / name, archive)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{archive} is corrupt or truncated: {exc}") from exc
        for name in layout.members:
            rel = f"{layout.folder}/{name}"
            try:
                check_file(staged / name, rel, checksums)
            except DataError:
                if not repacked:
                    raise
                raise DataError(
                    f"{archive} is corrupt or not the official file: MD5 {archive_md5}, expected "
                    f"{expected_archive}, and its member {rel} does not have its published MD5 "
                    f"{checksums.get(rel)} either. {offline_fix(archive, expected_archive)}"
                ) from None
        install_dir(staged, root / layout.folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ensure_folder(layout: CifarLayout, cfg: DataConfig, checksums: Mapping[str, str]) -> Path:
    root = Path(cfg.root)
    folder = root / layout.folder
    if not folder.is_dir():
        archive = fetch(
            layout.name, root, layout.archive, [layout.url], cfg.download, checksums.get(layout.archive)
        )
        _extract(layout, archive, root, checksums, digests(archive)[0])
    return folder


def _read_batch(layout: CifarLayout, path: Path) -> tuple[np.ndarray, np.ndarray]:
    entry = load_cifar_pickle(path.read_bytes(), str(path))
    data, labels = entry.get("data"), entry.get(layout.label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' is not a uint8 N x 3072 array")
    if not isinstance(labels, list) or len(labels) != data.shape[0]:
        raise DataError(f"{path}: {layout.label_key!r} is not a list of {data.shape[0]} labels")
    # Rows hold 1024 red, 1024 green, 1024 blue values, each plane row-major: that is C x H x W.
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def build_cifar(layout: CifarLayout, cfg: DataConfig, checksums: Mapping[str, str]) -> RawDataset:
    root = Path(cfg.root)
    folder = _ensure_folder(layout, cfg, checksums)
    sources: dict[str, str] = {}
    for name in layout.members:
        rel = f"{layout.folder}/{name}"
        path = folder / name
        if not path.is_file():
            raise DataError(
                f"{layout.name}: {path} is missing; delete {folder} so that {layout.archive} is unpacked "
                f"again, or put the official archive in {shown(root)}/.{link_note(folder)}"
            )
        sources[rel] = check_file(path, rel, checksums)

    def read(files: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [_read_batch(layout, folder / f) for f in files]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        return torch.from_numpy(images), torch.from_numpy(labels)

    train_images, train_labels = read(layout.train_files)
    test_images, test_labels = read(layout.test_files)
    meta = load_cifar_pickle((folder / layout.meta_file).read_bytes(), str(folder / layout.meta_file))
    names = meta.get(layout.names_key)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{folder / layout.meta_file}: no list of class names under {layout.names_key!r}")
    for split, labels in (("train", train_labels), ("test", test_labels)):
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(names)):
            raise DataError(f"{layout.name}: {split} labels outside 0..{len(names) - 1}")
    return RawDataset(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        class_names=list(names),
        sources=sources,
        crop_padding=4,
        hflip=True,
        mean=layout.mean,
        std=layout.std,
    )


@register("cifar10", checksums=CIFAR10_MD5)
def build_cifar10(cfg: DataConfig, checksums: Mapping[str, str]) -> RawDataset:
    return build_cifar(CIFAR10, cfg, checksums)


@register("cifar100", checksums=CIFAR100_MD5)
def build_cifar100(cfg: DataConfig, checksums: Mapping[str, str]) -> RawDataset:
    return build_cifar(CIFAR100, cfg, checksums)
