"""A small reader for the IDX format of the MNIST family (LeCun et al.): two zero bytes, a type code
(0x08 = unsigned byte), the number of dimensions, each dimension as a big-endian uint32, then the data.
The payload must have exactly the size the header promises: a truncated download fails here instead
of becoming a smaller dataset.
"""

from __future__ import annotations

import gzip
import zlib
from math import prod

import numpy as np

from r2kd.errors import DataError

UBYTE = 0x08


def parse_idx(data: bytes, source: str, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX payload with ``ndim`` dimensions."""
    if len(data) < 4:
        raise DataError(f"{source}: truncated IDX file ({len(data)} bytes, no header)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{source}: bad IDX magic number {data[:4].hex()} (must start with 0000)")
    if data[2] != UBYTE:
        raise DataError(f"{source}: IDX type code 0x{data[2]:02x}; only unsigned bytes (0x08) are supported")
    if data[3] != ndim:
        kind = "images (idx3)" if ndim == 3 else "labels (idx1)"
        raise DataError(f"{source}: IDX file has {data[3]} dimensions, expected {ndim} for {kind}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + prod(dims)
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(f"{source}: IDX file {problem}: {len(data)} bytes, header {dims} needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def decompress(packed: bytes, source: str) -> bytes:
    try:
        return gzip.decompress(packed)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{source}: corrupt or truncated gzip file: {exc}") from exc

