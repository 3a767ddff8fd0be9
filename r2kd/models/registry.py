"""Name -> builder registry for the model zoo: :func:`r2kd.models.create` only looks names up here,
so adding a network never touches an if/elif chain."""

from __future__ import annotations

from functools import partial
from typing import Callable, Protocol

from torch import nn


class Builder(Protocol):
    def __call__(self, *, num_classes: int, in_channels: int, input_size: int) -> nn.Module: ...


BUILDERS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Register ``builder`` under ``name`` (the spelling used in params.yaml and checkpoints)."""

    def decorate(builder: Builder) -> Builder:
        if name in BUILDERS:
            raise ValueError(f"model name {name!r} registered twice")
        BUILDERS[name] = builder
        return builder

    return decorate


def register_variants(variants: dict[str, tuple], network: Callable[..., nn.Module]) -> None:
    """Register each ``name: args`` as ``network(*args, num_classes=, in_channels=, input_size=)``."""
    for name, args in variants.items():
        register(name)(partial(network, *args))
