"""Name the Python globals a checkpoint's pickle refers to, without unpickling anything.

Used only after ``torch.load(..., weights_only=True)`` has refused a file, to tell a file that
carries pickled objects or code (possibly malicious) from one that is merely truncated or not a
checkpoint. The opcodes are read with :func:`pickletools.genops`, which decodes and never executes.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path

# What torch's own weights-only checkpoints name: tensor rebuild helpers, storages, dtypes,
# devices and OrderedDict. Anything else is a pickled Python object.
_TENSOR_GLOBALS = ("torch.", "collections.OrderedDict", "builtins.set", "builtins.bytearray", "_codecs.encode")


def _globals_in(stream: io.BytesIO) -> list[str]:
    names: list[str] = []
    strings: list[str] = []
    for opcode, arg, _ in pickletools.genops(stream):
        if opcode.name in ("GLOBAL", "INST"):
            names.append(str(arg).replace(" ", "."))
        elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
            # Module and name are the two strings pushed last (memo lookups can hide them: best effort).
            names.append(f"{strings[-2]}.{strings[-1]}")
        if isinstance(arg, str):
            strings.append(arg)
    return names


def _pickle_bytes(path: Path) -> bytes:
    """The main pickle of a zip-format checkpoint, or the whole file for the legacy/raw format."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            member = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
            return zf.read(member) if member else b""
    return path.read_bytes()


def foreign_globals(path: Path) -> list[str] | None:
    """Globals other than torch's tensor machinery that ``path``'s pickle names, in order.

    None when the file is not a readable pickle at all (garbage, truncated, not a checkpoint).
    The legacy format is several pickles in a row followed by raw storage bytes: read pickles until
    one fails to decode.
    """
    try:
        stream = io.BytesIO(_pickle_bytes(path))
    except (OSError, zipfile.BadZipFile, KeyError, EOFError):
        return None
    names: list[str] = []
    decoded_any = False
    while stream.tell() < len(stream.getbuffer()):
        start = stream.tell()
        try:
            names += _globals_in(stream)
        except Exception:  # genops raises ValueError and others on bytes that are not a pickle
            stream.seek(start)
            break
        decoded_any = True
    if not decoded_any:
        return None
    foreign = [n for n in names if not n.startswith(_TENSOR_GLOBALS)]
    return list(dict.fromkeys(foreign))
