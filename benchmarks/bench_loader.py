"""Images per second of the streaming train loader (r2kd/data/stream.py) for several worker counts,
on a synthetic JPEG tree in the ImageNet layout built in a temporary directory.

    python benchmarks/bench_loader.py                                  # 500 JPEGs of 256 x 320, image_size 224
    python benchmarks/bench_loader.py --images 2000 --workers 0 4 8 16 --device cuda
    python benchmarks/bench_loader.py --root data/raw/imagenet         # an existing tree (prepared into a temp dir)

Each measurement is one full epoch (decode, RandomResizedCrop + flip, collate, copy to the device,
normalise), after one untimed warm-up epoch, which also starts the OS file cache. Worker processes
are started inside the timed epoch, as in training. ``loader_images_per_second`` is the function to
reuse (e.g. next to the R34 -> R18 step rate).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from r2kd.config import DataConfig
from r2kd.data.prepared import load_meta
from r2kd.data.write import prepare
from r2kd.stages.dataset import stream_iterators


def make_jpeg_tree(root: Path, images: int, height: int, width: int, classes: int = 10, seed: int = 0) -> Path:
    """``images`` train JPEGs (quality 90, photo-like: smooth noise) over ``classes`` wnid folders, 2 val each."""
    rng = np.random.default_rng(seed)
    for i in range(images + 2 * classes):
        split, cls = ("train", i % classes) if i < images else ("val", (i - images) % classes)
        folder = root / split / f"n{cls:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        photo = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))
        noisy = np.clip(photo.astype(np.int16) + rng.integers(-12, 13, photo.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{i:06d}.JPEG", quality=90)
    return root


def loader_images_per_second(root: Path, workers: int, *, image_size: int = 224, batch_size: int = 64,
                             device: str = "cpu", prepared: Path | None = None, epochs: int = 1) -> float:
    """Train images per second of the streaming loader over the ImageNet-layout tree at ``root``.

    ``prepared``: where the index goes (a temporary directory if None; pass one to prepare once and
    time several worker counts)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(prepared) if prepared is not None else Path(tmp)
        if not (out / "meta.json").is_file():
            prepare(DataConfig(name="imagenet", root=str(root), image_size=image_size), out, workers=max(workers, 1))
        meta = load_meta(out)
        train, _ = stream_iterators(out, meta, batch_size, torch.device(device), torch.Generator().manual_seed(0),
                                    workers)
        for _ in train:  # warm-up epoch: file cache, lazy imports
            pass
        sync = torch.cuda.synchronize if train.device.type == "cuda" else (lambda: None)
        seen = 0
        began = time.perf_counter()
        for _ in range(epochs):
            for x, _ in train:
                seen += x.shape[0]
        sync()
        return seen / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="an existing ImageNet-layout tree (default: build a synthetic one)")
    parser.add_argument("--images", type=int, default=500, help="synthetic train images")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 8])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per worker count")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            began = time.perf_counter()
            root = make_jpeg_tree(Path(tmp) / "tree", args.images, args.height, args.width)
            console.print(f"built {args.images} JPEGs of {args.width}x{args.height} in {time.perf_counter() - began:.1f} s")
        prepared = Path(tmp) / "prepared"
        prepared.mkdir()
        table = Table(title=f"streaming train loader, image_size {args.image_size}, batch {args.batch_size}, "
                            f"{args.device} (RandomResizedCrop + flip, JPEG decode)")
        for col in ("workers", "images/s", "ms / batch", "vs 0 workers"):
            table.add_column(col, justify="right")
        base = None
        for workers in args.workers:
            rate = loader_images_per_second(root, workers, image_size=args.image_size, batch_size=args.batch_size,
                                            device=args.device, prepared=prepared, epochs=args.epochs)
            base = base or rate
            table.add_row(str(workers), f"{rate:,.0f}", f"{1000 * args.batch_size / rate:.1f}", f"{rate / base:.2f}x")
        console.print(table)


if __name__ == "__main__":
    main()
