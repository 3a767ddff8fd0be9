"""The paper's settings, ready to run: each ``NAME.yaml`` here is a complete params.yaml
(docs/presets.md). They ship inside the package, so ``r2kd preset NAME`` works from an installed
wheel as well as from a checkout."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable


def names() -> list[str]:
    """The presets there are, sorted."""
    return sorted(entry.name.removesuffix(".yaml") for entry in files(__name__).iterdir()
                  if entry.name.endswith(".yaml") and entry.is_file())


def find(name: str) -> Traversable | None:
    """The preset file NAME.yaml, or None when there is none."""
    entry = files(__name__) / f"{name}.yaml"
    return entry if name in names() else None
