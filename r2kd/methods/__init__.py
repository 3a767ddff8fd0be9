"""The distillation methods, one module each (pure loss functions + a thin :class:`Method`),
keyed by the names params.yaml uses. Adding a method: docs/extending.md.

Formulas, defaults and their sources: docs/losses.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from r2kd.errors import ConfigError
from r2kd.methods.base import AUG_SUFFIX, Method
from r2kd.methods.ce import CE
from r2kd.methods.dist import DIST
from r2kd.methods.dkd import DKD
from r2kd.methods.kd import KD
from r2kd.methods.r2kd import R2KD

METHODS: dict[str, type[Method]] = {"ce": CE, "kd": KD, "dist": DIST, "dkd": DKD, "r2kd": R2KD}


def make_method(name: str, params: Mapping[str, Any] | None = None) -> Method:
    """The method ``name`` with ``params`` (a plain mapping, as in params.yaml) validated."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    cls = METHODS[name]
    try:
        return cls(cls.Params.model_validate(dict(params or {})))
    except ValidationError as err:
        raise ConfigError(f"invalid parameters for method {name!r}: {err}") from None


__all__ = ["AUG_SUFFIX", "METHODS", "Method", "make_method"]
