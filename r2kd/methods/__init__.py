"""The distillation methods, one module each, keyed by the names params.yaml uses (docs/losses.md,
docs/extending.md)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from r2kd import pipeline
from r2kd.errors import ConfigError
from r2kd.methods.base import AUG_SUFFIX, Method


class _Registry(Mapping[str, type[Method]]):
    """The methods of the pipeline table (r2kd/pipeline.py), each imported from its own module when
    first asked for: a student runs its own method's file and no other's, so an edit of
    r2kd/methods/kd.py is part of the kd students' code only (r2kd/stagecode.py)."""

    def __getitem__(self, name: str) -> type[Method]:
        if name not in pipeline.METHODS:
            raise KeyError(name)
        module = importlib.import_module(f"r2kd.methods.{name}")
        return next(obj for obj in vars(module).values()
                    if isinstance(obj, type) and issubclass(obj, Method) and getattr(obj, "name", None) == name)

    def __iter__(self) -> Iterator[str]:
        return iter(pipeline.METHODS)

    def __len__(self) -> int:
        return len(pipeline.METHODS)


METHODS: Mapping[str, type[Method]] = _Registry()


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
