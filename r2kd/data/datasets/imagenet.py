"""ImageNet-1k (ILSVRC-2012) from its extracted JPEG tree; always streamed (never decoded into memory).

``train/<wnid>/*.JPEG``; validation images in ``val/<wnid>/`` or flat in ``val/`` with a label file
(Kaggle's ``LOC_val_solution.csv`` or a tab-separated ``val/val_annotations.txt``); class names from
``LOC_synset_mapping.txt`` when present. docs/data.md, "imagenet", has the layouts.
"""

from __future__ import annotations

import csv
from pathlib import Path

from r2kd.config import DataConfig
from r2kd.data.datasets.imagefolder import EXTENSIONS, list_split, train_classes
from r2kd.data.registry import FileList, IndexedDataset, register_index
from r2kd.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LABEL_FILES = ("LOC_val_solution.csv", "val/LOC_val_solution.csv", "val/val_annotations.txt")
SYNSETS = "LOC_synset_mapping.txt"


def _read_labels(path: Path) -> dict[str, str]:
    """Validation file stem -> wnid, from a Kaggle CSV or a tab-separated annotation file."""
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"imagenet: cannot read {path}: {exc}") from exc
    if path.suffix == ".csv":
        rows = list(csv.reader(text.splitlines()))
        if not rows or [c.strip() for c in rows[0][:2]] != ["ImageId", "PredictionString"]:
            raise DataError(f"imagenet: {path} does not start with the header ImageId,PredictionString")
        pairs = [(r[0].strip(), r[1].split()[0] if r[1].split() else "") for r in rows[1:] if len(r) >= 2]
    else:
        pairs = [(f[0].strip(), f[1].strip()) for f in (ln.split("\t") for ln in text.splitlines()) if len(f) >= 2]
    for name, wnid in pairs:
        if not name or not wnid:
            raise DataError(f"imagenet: {path} has a row without a file or a class: {name!r}, {wnid!r}")
        out[Path(name).stem] = wnid
    return out


def _flat_val(root: Path, classes: list[str], limit: int | None) -> tuple[FileList, str]:
    label_file = next((root / rel for rel in LABEL_FILES if (root / rel).is_file()), None)
    if label_file is None:
        raise DataError(
            f"imagenet: {(root / 'val').resolve()} holds images but no class folders, and no label file was "
            f"found ({', '.join(str((root / rel).resolve()) for rel in LABEL_FILES)}); sort the images into "
            f"val/<wnid>/ or put Kaggle's LOC_val_solution.csv in {root.resolve()}"
        )
    labels = _read_labels(label_file)
    index = {c: i for i, c in enumerate(classes)}
    per_class = dict.fromkeys(classes, 0)
    files: list[str] = []
    targets: list[int] = []
    for path in sorted(p for p in (root / "val").iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS):
        wnid = labels.get(path.stem)
        if wnid is None:
            raise DataError(f"imagenet: {label_file} gives no class for {path}")
        if wnid not in index:
            raise DataError(f"imagenet: {label_file} gives {path.name} the class {wnid}, which train/ does not have")
        if limit is not None and per_class[wnid] >= limit:
            continue
        per_class[wnid] += 1
        files.append(path.relative_to(root).as_posix())
        targets.append(index[wnid])
    if not files:
        raise DataError(f"imagenet: {(root / 'val').resolve()} holds no images")
    return FileList(files, targets), label_file.relative_to(root).as_posix()


def _names(root: Path, wnids: list[str]) -> list[str]:
    path = root / SYNSETS
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    names = {wnid: name.strip() or wnid for wnid, _, name in (line.strip().partition(" ") for line in lines) if wnid}
    return [names.get(w, w) for w in wnids]


@register_index("imagenet")
def index_imagenet(cfg: DataConfig) -> IndexedDataset:
    root = Path(cfg.root)
    val_dir = root / "val"
    wnids = train_classes(root, "imagenet", f"{val_dir.resolve()}/<wnid>/")
    if not val_dir.is_dir():
        raise DataError(f"imagenet: {val_dir.resolve()} not found; put the 50,000 validation images in "
                        f"{val_dir.resolve()}/<wnid>/ (or flat, with LOC_val_solution.csv in {root.resolve()})")
    extra: dict = {"class_ids": wnids}
    if any(p.is_dir() for p in val_dir.iterdir()):
        test = list_split(val_dir, wnids, cfg.test_limit, root)
        extra["val_layout"] = "class folders"
    else:
        test, label_file = _flat_val(root, wnids, cfg.test_limit)
        extra["val_layout"] = f"flat, labels from {label_file}"
    return IndexedDataset(list_split(root / "train", wnids, cfg.train_limit, root), test, _names(root, wnids),
                          mean=IMAGENET_MEAN, std=IMAGENET_STD, stats_from="imagenet", extra=extra)
