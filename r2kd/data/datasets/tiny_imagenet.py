"""Tiny-ImageNet-200 from the official ``tiny-imagenet-200.zip`` (layout and class order: docs/data.md).

The zip is read in place (its MD5, or the user's data.checksums pin, checked first; nothing is
extracted, so nothing can be left half extracted and a read-only data.root works). The 10,000
validation images are the test split. Crop padding is 8, CIFAR's 4/32 kept at 64 px, plus flips.
Normalisation uses the ImageNet constants, as the reference's Tiny-ImageNet loader does, not
statistics of the train split: imported official checkpoints then see the inputs they were trained on.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from r2kd.config import DataConfig
from r2kd.data.datasets.imagenet import IMAGENET_MEAN, IMAGENET_STD
from r2kd.data.registry import RawDataset, register
from r2kd.data.sources import check_pin, digests, fetch, offline_fix, official, unverified_error
from r2kd.errors import DataError

ARCHIVE = "tiny-imagenet-200.zip"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_MD5 = {ARCHIVE: "90528d7ca1a48142e341f4ef8d21d0de"}
TOP = "tiny-imagenet-200/"
SIZE = 64


def _decode(zf: zipfile.ZipFile, member: str, archive: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(zf.read(member))) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DataError(f"{archive}: member {member} is corrupt: {exc}") from exc
    except Exception as exc:  # PIL.UnidentifiedImageError, OSError (truncated JPEG), ...
        raise DataError(f"{archive}: member {member} is not a readable image: {exc}") from exc
    if arr.shape != (SIZE, SIZE, 3):
        raise DataError(f"{archive}: member {member} is {arr.shape[1]}x{arr.shape[0]}, expected {SIZE}x{SIZE}")
    return arr.transpose(2, 0, 1)


def _text(zf: zipfile.ZipFile, member: str, archive: Path) -> str:
    try:
        return zf.read(member).decode("utf-8")
    except KeyError:
        raise DataError(f"{archive} has no {member}; not the official Tiny-ImageNet archive") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{archive}: member {member} is corrupt: {exc}") from exc


def _stack(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)) if images else torch.empty((0, 3, SIZE, SIZE), dtype=torch.uint8)


def _verify(archive: Path, checksums: Mapping[str, str], pins: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """(SHA-256, who vouches): the user's pin, else the published MD5 of the zip.

    Only the zip's own MD5 is published (torchvision's TinyImageNet is not in torchvision; this one is
    cs231n's, as used by the mdistiller/R2KD loaders): no hash of its 120,000 member files is, so a
    re-packed zip cannot be checked against the official release and needs a pin.
    """
    md5, sha = digests(archive)
    vouched = check_pin(archive, ARCHIVE, sha, pins)
    if vouched is not None:
        return sha, vouched
    expected = checksums.get(ARCHIVE)
    if expected is not None and md5 == expected.lower():
        return sha, official("MD5 of the official archive")
    raise unverified_error(
        archive, ARCHIVE, sha,
        f"MD5 {md5}; the official {ARCHIVE} has {expected}. No hash of its contents (the member images) is "
        f"published, so a re-packed copy cannot be checked against the official release.",
        offline_fix(archive, expected or "?"),
    )


@register("tiny_imagenet", checksums=TINY_IMAGENET_MD5)
def build_tiny_imagenet(cfg: DataConfig, checksums: Mapping[str, str]) -> RawDataset:
    root = Path(cfg.root)
    archive = fetch("tiny_imagenet", root, ARCHIVE, [URL], cfg.download, checksums.get(ARCHIVE))
    sha, vouched = _verify(archive, checksums, cfg.checksums)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{archive} is corrupt or truncated: {exc}") from exc
    with zf:
        wnids = sorted({w.strip() for w in _text(zf, TOP + "wnids.txt", archive).splitlines() if w.strip()})
        index = {w: i for i, w in enumerate(wnids)}
        lines = _text(zf, TOP + "words.txt", archive).splitlines()
        words = {wnid.strip(): name.strip() for wnid, _, name in (line.partition("\t") for line in lines)}

        train_members: dict[str, list[str]] = {w: [] for w in wnids}
        for member in zf.namelist():
            parts = member.split("/")
            # tiny-imagenet-200/train/<wnid>/images/<file>.JPEG
            if len(parts) == 5 and parts[1] == "train" and parts[3] == "images" and parts[4]:
                if parts[2] not in index:
                    raise DataError(f"{archive}: {member} is in class {parts[2]}, which wnids.txt does not list")
                train_members[parts[2]].append(member)

        train_images, train_labels = [], []
        for wnid in wnids:
            if not train_members[wnid]:
                raise DataError(f"{archive}: no training images for class {wnid}")
            members = sorted(train_members[wnid])[: cfg.train_limit]  # decode only what is kept (100k JPEGs)
            train_images += [_decode(zf, member, archive) for member in members]
            train_labels += [index[wnid]] * len(members)

        val_images, val_labels = [], []
        per_class = dict.fromkeys(wnids, 0)
        for line in _text(zf, TOP + "val/val_annotations.txt", archive).splitlines():
            fields = line.split("\t")
            if len(fields) < 2 or not fields[0].strip():
                continue
            filename, wnid = fields[0].strip(), fields[1].strip()
            if wnid not in index:
                raise DataError(f"{archive}: val_annotations.txt gives {filename} the unknown class {wnid}")
            if cfg.test_limit is not None and per_class[wnid] >= cfg.test_limit:
                continue
            per_class[wnid] += 1
            member = TOP + "val/images/" + filename
            if member not in zf.NameToInfo:
                raise DataError(f"{archive}: val_annotations.txt lists {filename}, but {member} is missing")
            val_images.append(_decode(zf, member, archive))
            val_labels.append(index[wnid])

    return RawDataset(
        _stack(train_images), torch.tensor(train_labels, dtype=torch.int64), _stack(val_images),
        torch.tensor(val_labels, dtype=torch.int64), class_names=[words.get(w, w) for w in wnids],
        sources={ARCHIVE: sha}, verified={ARCHIVE: vouched}, crop_padding=8, hflip=True,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, stats_from="imagenet", extra={"class_ids": wnids},
    )
