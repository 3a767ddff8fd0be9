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


def foreign_globals(path: Path) -> list[str]:
    """Globals other than torch's tensor machinery that ``path``'s pickle names, in order; empty when
    there are none or the file is not a readable pickle at all (garbage, truncated, not a checkpoint).

    A zip-format checkpoint's pickle is its ``data.pkl``. The legacy format is several pickles in a
    row followed by raw storage bytes: pickles are read until one fails to decode.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                member = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                stream = io.BytesIO(zf.read(member) if member else b"")
        else:
            stream = io.BytesIO(path.read_bytes())
    except (OSError, zipfile.BadZipFile, KeyError, EOFError):
        return []
    names: list[str] = []
    while stream.tell() < len(stream.getbuffer()):
        try:
            names += _globals_in(stream)
        except Exception:  # genops raises ValueError and others on bytes that are not a pickle
            break
    return list(dict.fromkeys(n for n in names if not n.startswith(_TENSOR_GLOBALS)))
