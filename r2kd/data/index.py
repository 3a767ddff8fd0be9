"""The index of a streamed split: which files, their labels, and what each file must still be.

A dict of tensors only (format: docs/data.md, "Streaming"), so it saves as a weights-only checkpoint
and hashes with :func:`r2kd.files.sha256_state_dict`. The paths are one UTF-8 buffer, not a million
Python strings: fast to load, and DataLoader workers share it. Every read checks the file against its
entry (:func:`check_file_bytes`): a file changed after ``prepare`` is an error naming it.
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from r2kd.data.registry import FileList
from r2kd.errors import DataError

HASHES = ("sha256", "size")


def encode_files(files: list[str]) -> torch.Tensor:
    bad = next((f for f in files if "\n" in f or not f), None)
    if bad is not None:
        raise DataError(f"the file name {bad!r} is empty or holds a line break; rename it")
    return torch.frombuffer(bytearray("\n".join(files).encode("utf-8")), dtype=torch.uint8)


def decode_files(blob: torch.Tensor) -> list[str]:
    return blob.numpy().tobytes().decode("utf-8").split("\n") if blob.numel() else []


def _entry(root: Path, rel: str, mode: str) -> tuple[int, bytes]:
    from PIL import Image

    path = root / rel
    try:
        if mode == "size":
            return os.stat(path).st_size, b""
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:  # refuse a file PIL cannot identify now, at prepare time (full decoding happens in the loader)
        with Image.open(io.BytesIO(data)):
            pass
    except Exception as exc:  # UnidentifiedImageError, truncated header, ...
        raise DataError(f"{path} is not a readable image: {exc}") from exc
    return len(data), hashlib.sha256(data).digest()


def build_index(root: Path, split: FileList, mode: str, threads: int,
                advance: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
    """Stat (and with mode sha256, read, header-check and hash) every file of ``split``."""
    if mode not in HASHES:
        raise ValueError(f"unknown index hash {mode!r}")
    n = len(split.files)
    sizes = np.zeros(n, dtype=np.int64)
    digests = np.zeros((n, 32 if mode == "sha256" else 0), dtype=np.uint8)
    # Threads: hashlib and file reads release the GIL, so hashing ImageNet scales with them.
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for i, (size, digest) in enumerate(pool.map(lambda rel: _entry(root, rel, mode), split.files, chunksize=64)):
            sizes[i] = size
            if digest:
                digests[i] = np.frombuffer(digest, dtype=np.uint8)
            if advance is not None:
                advance(1)
    return {
        "files": encode_files(split.files),
        "labels": torch.tensor(split.labels, dtype=torch.int64),
        "sizes": torch.from_numpy(sizes),
        "sha256": torch.from_numpy(digests),
    }


def check_file_bytes(path: Path, data: bytes, size: int, digest: np.ndarray) -> None:
    """Refuse file contents that differ from the index entry (size, and SHA-256 when recorded)."""
    fix = "rerun the prepare stage if the change is intended, else restore the file"
    if len(data) != size:
        raise DataError(f"{path} changed since prepare: {len(data)} bytes, the index says {size}; {fix}")
    if digest.size and hashlib.sha256(data).digest() != digest.tobytes():
        raise DataError(f"{path} changed since prepare: its SHA-256 differs from the index; {fix}")
