"""Distillers keyed by the method name used in params.yaml."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import ValidationError

from r2kd.distillers.base import Distiller
from r2kd.errors import ConfigError

DISTILLERS: dict[str, type[Distiller]] = {}

D = TypeVar("D", bound=type[Distiller])


def register_distiller(cls: D) -> D:
    if cls.name in DISTILLERS:
        raise ValueError(f"distiller {cls.name!r} registered twice")
    DISTILLERS[cls.name] = cls
    return cls


def get_distiller(name: str) -> type[Distiller]:
    try:
        return DISTILLERS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(DISTILLERS))}") from None


def make_distiller(name: str, params: Mapping[str, Any] | None = None) -> Distiller:
    """Validate ``params`` (a plain mapping from params.yaml) and build the distiller."""
    cls = get_distiller(name)
    try:
        validated = cls.Params.model_validate(dict(params or {}))
    except ValidationError as err:
        raise ConfigError(f"invalid parameters for method {name!r}: {err}") from None
    return cls(validated)
