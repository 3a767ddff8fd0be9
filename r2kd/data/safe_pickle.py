"""A restricted unpickler for the official CIFAR python-format batches (Python 2 pickles of dicts).

``pickle.load`` (what torchvision uses) would run any callable a tampered file names; this one
resolves only the few globals a numpy array needs, so a foreign pickle fails with a DataError
instead of executing code. Object-dtype arrays are refused too: CIFAR never has them.
"""

from __future__ import annotations

import codecs
import io
import pickle
from typing import Any

import numpy as np

from r2kd.errors import DataError

try:  # numpy >= 2 moved the implementation; both names appear in pickles in the wild
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct


def _checked_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("array subtype other than numpy.ndarray")
    return _reconstruct(subtype, shape, dtype)


def _checked_dtype(spec: Any, *args: Any) -> np.dtype:
    dtype = np.dtype(spec, *args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("object dtype")
    return dtype


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Python 3 writes bytes at protocol 2 as _codecs.encode(str, "latin1"); allow only that form.
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _checked_dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def load_cifar_pickle(data: bytes, source: str) -> Any:
    """Unpickle one CIFAR batch (latin1 strings, like torchvision) or raise DataError naming ``source``."""
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:  # truncated, foreign or malicious: all mean "not an official batch"
        raise DataError(f"{source} is not a valid CIFAR python-format batch: {exc}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{source} is not a valid CIFAR python-format batch: top level is {type(obj).__name__}")
    return obj
