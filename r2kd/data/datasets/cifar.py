"""CIFAR-10 and CIFAR-100 from the official python-format archives (or torchvision's extracted folders).

Read here rather than by ``torchvision.datasets.CIFAR10``, which extracts in place (a crash leaves a
half tree that looks installed; data.root may be read-only) and unpickles with ``pickle.load`` (any
callable). Only the expected members are read, into memory, each checked against its published MD5
(torchvision's), and unpickled with :mod:`r2kd.data.safe_pickle`. docs/data.md, "cifar10, cifar100".
"""

from __future__ import annotations

import hashlib
import tarfile
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from r2kd.config import DataConfig
from r2kd.data.registry import RawDataset, register
from r2kd.data.safe_pickle import load_cifar_pickle
from r2kd.data.sources import check_pin, digests, fetch, link_note, offline_fix, official, shown, unverified_error
from r2kd.errors import DataError


@dataclass(frozen=True)
class CifarLayout:
    name: str
    archive: str
    folder: str
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

    @property
    def url(self) -> str:
        return f"https://www.cs.toronto.edu/~kriz/{self.archive}"


CIFAR10 = CifarLayout(
    "cifar10", "cifar-10-python.tar.gz", "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta", "labels", "label_names",
    # Per-channel statistics of the 50,000 training images (population std of all pixels). The
    # widely copied (0.2023, 0.1994, 0.2010) is a different statistic, not the pixel std.
    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
)
CIFAR100 = CifarLayout(
    "cifar100", "cifar-100-python.tar.gz", "cifar-100-python",
    ("train",), ("test",), "meta", "fine_labels", "fine_label_names",
    # The values of the RepDistiller / mdistiller CIFAR-100 recipe that R2KD builds on.
    mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761),
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


# Far above the largest official member (CIFAR-100 train, ~155 MB): a foreign archive cannot fill memory.
MAX_MEMBER_BYTES = 512 << 20


def _check_member(path: Path, rel: str, data: bytes, checksums: Mapping[str, str], pins: Mapping[str, str],
                  where: str | None = None) -> tuple[str, str, dict[str, str] | None]:
    """(MD5, SHA-256, who vouches or None) of one member's bytes: the user's pin, else its published MD5."""
    md5, sha = hashlib.md5(data, usedforsecurity=False).hexdigest(), hashlib.sha256(data).hexdigest()
    vouched = check_pin(path, rel, sha, pins, where=where)
    expected = checksums.get(rel)
    if vouched is None and expected is not None and md5 == expected.lower():
        vouched = official("MD5 of the official member")
    return md5, sha, vouched


def _from_archive(layout: CifarLayout, archive: Path, checksums: Mapping[str, str], pins: Mapping[str, str]
                  ) -> tuple[dict[str, bytes], dict[str, dict[str, str]]]:
    """The expected members of the archive, read into memory, and who vouches for each.

    The members' published MD5s decide: an archive re-packed with identical members (another MD5)
    is accepted, one with any other member is refused unless the archive is pinned in data.checksums.
    """
    archive_md5, archive_sha = digests(archive)
    pinned = check_pin(archive, layout.archive, archive_sha, pins)
    verified = {layout.archive: pinned} if pinned is not None else {}
    members: dict[str, bytes] = {}
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
                if found[name].size > MAX_MEMBER_BYTES:
                    raise DataError(f"{archive}: member {found[name].name} is {found[name].size} bytes; "
                                    "not the official archive")
                with tar.extractfile(found[name]) as src:  # regular files only: never None
                    members[name] = src.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{archive} is corrupt or truncated: {exc}") from exc
    expected_archive = checksums.get(layout.archive)
    for name in layout.members:
        rel = f"{layout.folder}/{name}"
        md5, _, vouched = _check_member(archive, rel, members[name], checksums, pins,
                                        where=f"{shown(archive)} (member {rel})")
        if vouched is None and pinned is not None:
            vouched = {"by": "user", "how": f"member of {layout.archive}, pinned in data.checksums"}
        if vouched is None:
            raise unverified_error(
                archive, layout.archive, archive_sha,
                f"its member {rel} has MD5 {md5}, the official member has {checksums.get(rel)}, so this "
                f"archive does not hold the official contents (the archive's own MD5 is {archive_md5}; the "
                f"official archive has {expected_archive}).",
                offline_fix(archive, expected_archive) if expected_archive else f"place the official archive at "
                f"{shown(archive)}.",
            )
        verified[rel] = vouched
    return members, verified


def _from_folder(layout: CifarLayout, root: Path, checksums: Mapping[str, str], pins: Mapping[str, str]
                 ) -> tuple[dict[str, bytes], dict[str, dict[str, str]]]:
    """The members from an extracted folder (torchvision's layout), each checked like an archive's."""
    folder = root / layout.folder
    members: dict[str, bytes] = {}
    verified: dict[str, dict[str, str]] = {}
    for name in layout.members:
        rel = f"{layout.folder}/{name}"
        path = folder / name
        if not path.is_file():
            raise DataError(
                f"{layout.name}: {shown(path)} is missing, so the extracted folder {shown(folder)} is incomplete. "
                f"Restore it, or move the folder away and put the official {layout.archive} in {shown(root)}/ "
                f"(it is read directly; nothing is unpacked under data.root).{link_note(folder)}"
            )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
        md5, sha, vouched = _check_member(path, rel, data, checksums, pins)
        if vouched is None:
            raise unverified_error(
                path, rel, sha,
                f"MD5 {md5}; the official {rel} has {checksums.get(rel)}: these are not the official contents.",
                f"{offline_fix(path, checksums.get(rel, '?'))} Or move the folder away and put the official "
                f"{layout.archive} in {shown(root)}/.",
            )
        members[name], verified[rel] = data, vouched
    return members, verified


def _read_batch(layout: CifarLayout, data: bytes, label: str) -> tuple[np.ndarray, np.ndarray]:
    entry = load_cifar_pickle(data, label)
    data, labels = entry.get("data"), entry.get(layout.label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{label}: 'data' is not a uint8 N x 3072 array")
    if not isinstance(labels, list) or len(labels) != data.shape[0]:
        raise DataError(f"{label}: {layout.label_key!r} is not a list of {data.shape[0]} labels")
    # Rows hold 1024 red, 1024 green, 1024 blue values, each plane row-major: that is C x H x W.
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def build_cifar(layout: CifarLayout, cfg: DataConfig, checksums: Mapping[str, str]) -> RawDataset:
    root = Path(cfg.root)
    if (root / layout.folder).is_dir():
        members, verified = _from_folder(layout, root, checksums, cfg.checksums)
        where = {name: str(root / layout.folder / name) for name in layout.members}
    else:
        archive = fetch(layout.name, root, layout.archive, [layout.url], cfg.download, checksums.get(layout.archive))
        members, verified = _from_archive(layout, archive, checksums, cfg.checksums)
        where = {name: f"{archive}: {layout.folder}/{name}" for name in layout.members}
    sources = {f"{layout.folder}/{name}": hashlib.sha256(members[name]).hexdigest() for name in layout.members}

    def read(files: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = zip(*(_read_batch(layout, members[f], where[f]) for f in files))
        return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))

    train_images, train_labels = read(layout.train_files)
    test_images, test_labels = read(layout.test_files)
    meta = load_cifar_pickle(members[layout.meta_file], where[layout.meta_file])
    names = meta.get(layout.names_key)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{where[layout.meta_file]}: no list of class names under {layout.names_key!r}")
    return RawDataset(train_images, train_labels, test_images, test_labels, class_names=list(names), sources=sources,
                      verified=verified, crop_padding=4, hflip=True, mean=layout.mean, std=layout.std)


register("cifar10", checksums=CIFAR10_MD5)(partial(build_cifar, CIFAR10))
register("cifar100", checksums=CIFAR100_MD5)(partial(build_cifar, CIFAR100))
