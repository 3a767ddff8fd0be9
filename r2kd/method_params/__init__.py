"""Each method's hyper-parameters and what its students depend on, one torch-free module per method:
r2kd/method_params/<name>.py defines ``PARAMS`` (the model of ``method_params.<name>``) and
``USES_PRUNED_TEACHER``. The methods are the modules found here, so adding one edits no file that
another stage runs (docs/extending.md); a method's module is part of its own students' code only.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from types import ModuleType


@functools.cache
def names() -> tuple[str, ...]:
    """Every method, in a stable order: the shipped ones first, as params.yaml lists them."""
    found = {p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_")}
    shipped = [n for n in ("ce", "kd", "dist", "dkd", "r2kd") if n in found]
    return (*shipped, *sorted(found - set(shipped)))


def module(name: str) -> ModuleType:
    if name not in names():
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}")
