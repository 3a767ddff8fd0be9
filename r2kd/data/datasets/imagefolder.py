"""A user's own images in the ImageFolder layout: ``<root>/train/<class>/*`` and ``<root>/val/<class>/*``
(or ``test/``), docs/data.md "imagefolder". Files are read in sorted order, so the result does not
depend on the file system's listing order. Base augmentation: crop padding image_size // 8 (CIFAR's
4/32), horizontal flips on; this suits natural photos, not text or digits. Streamed, the same files
and labels go into an index instead (:func:`index_imagefolder`) and the loader applies the ImageNet recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from r2kd.config import DataConfig
from r2kd.data.registry import FileList, IndexedDataset, RawDataset, register, register_index
from r2kd.data.sources import digests
from r2kd.errors import DataError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def _load(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except Exception as exc:  # UnidentifiedImageError, truncated files, ...
        raise DataError(f"{path} is not a readable image: {exc}") from exc


@register("imagefolder")
def build_imagefolder(cfg: DataConfig, checksums: Mapping[str, str]) -> RawDataset:
    """The files :func:`index_imagefolder` lists, decoded and resized to image_size squared."""
    listed, root, size = index_imagefolder(cfg), Path(cfg.root), cfg.image_size
    assert size is not None  # DataConfig requires it for imagefolder
    sources: dict[str, str] = {}

    def read(split: FileList) -> tuple[torch.Tensor, torch.Tensor]:
        images = []
        for rel in split.files:
            sources[rel] = digests(root / rel)[1]
            images.append(_load(root / rel, size))
        return torch.from_numpy(np.stack(images)), torch.tensor(split.labels, dtype=torch.int64)

    train_images, train_labels = read(listed.train)
    test_images, test_labels = read(listed.test)
    return RawDataset(train_images, train_labels, test_images, test_labels, class_names=listed.class_names,
                      sources=sources, crop_padding=max(1, size // 8), hflip=True, extra=listed.extra)


# --- streamed: an index of the same files -------------------------------------------------------------
def list_split(split_dir: Path, classes: list[str], limit: int | None, root: Path) -> FileList:
    """The image files of ``split_dir/<class>/`` (sorted, first ``limit`` per class), relative to root."""
    index = {c: i for i, c in enumerate(classes)}
    files: list[str] = []
    labels: list[int] = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if class_dir.name not in index:
            raise DataError(f"{class_dir} is a class that {root / 'train'} does not have; classes come from train/")
        images = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
        found = [path.relative_to(root).as_posix() for path in images[:limit]]
        files += found
        labels += [index[class_dir.name]] * len(found)
    if not files:
        raise DataError(f"{split_dir} holds no images (extensions: {', '.join(sorted(EXTENSIONS))})")
    return FileList(files, labels)


def train_classes(root: Path, dataset: str, test_hint: str) -> list[str]:
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(
            f"{dataset}: {train_dir.resolve()} not found; put one folder of images per class in "
            f"{train_dir.resolve()}/<class>/ and the held-out images in {test_hint}"
        )
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{dataset}: {train_dir.resolve()} has no class folders")
    return classes


@register_index("imagefolder")
def index_imagefolder(cfg: DataConfig) -> IndexedDataset:
    root = Path(cfg.root)
    classes = train_classes(root, "imagefolder", f"{(root / 'val').resolve()}/<class>/")
    test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if test_dir is None:
        raise DataError(
            f"imagefolder: neither {(root / 'val').resolve()} nor {(root / 'test').resolve()} exists; "
            f"put the held-out images in {(root / 'val').resolve()}/<class>/"
        )
    return IndexedDataset(list_split(root / "train", classes, cfg.train_limit, root),
                          list_split(test_dir, classes, cfg.test_limit, root), classes,
                          extra={"test_dir": test_dir.name})
