"""Each method's hyper-parameters (a pydantic model) and what its students depend on, one
torch-free module per method: r2kd/method_params/<name>.py defines ``PARAMS`` (the model of
``method_params.<name>`` in params.yaml) and ``USES_PRUNED_TEACHER``.

The methods are the modules found here, so adding one adds two files (this one and
r2kd/methods/<name>.py) and edits no file that another stage runs: it reruns no teacher, no other
method's students. A method's module is imported only when its params are validated or its
students run; it is part of its own students' code only (r2kd/pipeline.py: Method.files).
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).parent


@functools.cache
def names() -> tuple[str, ...]:
    """Every method, in a stable order: the shipped ones first, as params.yaml lists them."""
    found = {p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_")}
    shipped = [n for n in ("ce", "kd", "dist", "dkd", "r2kd") if n in found]
    return (*shipped, *sorted(found - set(shipped)))


def module(name: str) -> ModuleType:
    if name not in names():
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}")
