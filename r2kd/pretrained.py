"""torchvision's published ImageNet weights as teachers (``teachers.<arch>.pretrained``, docs/presets.md).

:func:`resolve` names the weights (torchvision's weights API); :func:`fetch` finds the file exactly where
``torch.hub`` caches it (``<torch.hub.get_dir()>/checkpoints/<basename of the URL>``), so a file torch.hub
already downloaded is reused, and downloads only when ``data.download`` is true. Verification is
torch.hub's own (``check_hash``: the file's SHA-256 must start with the hex digits its name ends in), done
on every use, not only after a download; the file is then read weights-only and loaded strictly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch.hub
from torch import nn

from r2kd.errors import CheckpointError, ConfigError
from r2kd.files import load_checkpoint, sha256_file
from r2kd.modelfile import load_state
from r2kd.models.torchvision_zoo import torchvision_name

# torch.hub.HASH_REGEX is r"-([a-f0-9]*)\."; at least 8 digits are required here (torchvision's
# names all have 8), since a shorter prefix would verify next to nothing.
_HASH_PREFIX = re.compile(r"-([a-f0-9]{8,64})\.")


@dataclass(frozen=True)
class PretrainedWeights:
    """One published weights file: which architecture and enum member, where it comes from."""

    arch: str  # r2kd model name, e.g. tv_resnet18
    member: str  # weights enum member, e.g. IMAGENET1K_V1
    enum: str  # the enum's name, e.g. ResNet18_Weights
    url: str
    num_classes: int  # len(meta["categories"])

    @property
    def filename(self) -> str:
        name = Path(urlparse(self.url).path).name
        if not name or name in (".", ".."):
            raise ConfigError(f"{self.enum}.{self.member}: URL {self.url!r} names no file")
        return name

    @property
    def hash_prefix(self) -> str:
        return hash_prefix(self.filename)


def resolve(arch: str, member: str) -> PretrainedWeights:
    """The torchvision weights ``member`` of the r2kd model ``arch`` (a ``tv_*`` model)."""
    from torchvision.models import get_model_weights  # imported here: it costs about 1.5 s

    try:
        tv_name = torchvision_name(arch)
    except KeyError:
        raise ConfigError(f"teachers.{arch}.pretrained: {arch!r} is not a torchvision model; "
                          "only tv_* models have torchvision weights") from None
    enum = get_model_weights(tv_name)
    try:
        weights = enum[member]
    except KeyError:
        known = [name for name in enum.__members__ if name != "DEFAULT"]
        raise ConfigError(f"teachers.{arch}.pretrained: {enum.__name__} has no member {member!r}; "
                          f"choose one of {known}") from None
    return PretrainedWeights(arch=arch, member=member, enum=enum.__name__, url=weights.url,
                             num_classes=len(weights.meta["categories"]))


def hash_prefix(filename: str) -> str:
    """The SHA-256 prefix a torch.hub-style file name carries (``resnet18-f37072fd.pth`` -> ``f37072fd``)."""
    found = _HASH_PREFIX.search(filename)
    if found is None:
        raise CheckpointError(f"{filename}: the name carries no SHA-256 prefix ('-<8+ hex digits>.'), "
                              "so the file cannot be verified")
    return found.group(1)


def cache_path(weights: PretrainedWeights) -> Path:
    """Where torch.hub keeps (or would download) the file: ``<torch.hub.get_dir()>/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weights.filename


def verify(path: Path, prefix: str) -> str:
    """The file's SHA-256, after checking it starts with ``prefix``; CheckpointError otherwise."""
    digest = sha256_file(path)
    if not digest.startswith(prefix.lower()):
        raise CheckpointError(f"{path}: SHA-256 is {digest}, but its name promises one starting with {prefix}; the "
                              "file is corrupt or not the published one. Delete it and download it again")
    return digest


def fetch(weights: PretrainedWeights, download: bool) -> tuple[Path, str]:
    """The verified local file of ``weights`` and its SHA-256; downloads only when ``download``."""
    path = cache_path(weights)
    prefix = weights.hash_prefix
    if not path.is_file():
        if not download:
            raise CheckpointError(f"the {weights.enum}.{weights.member} weights of teacher {weights.arch} are not at "
                                  f"{path}. Download {weights.url} and save it as {path} (the torch.hub cache; set "
                                  "TORCH_HOME to move it), or set data.download: true to let r2kd download it")
        path.parent.mkdir(parents=True, exist_ok=True)
        # torch.hub writes to a temporary file, checks the prefix, then renames: no partial file is left.
        torch.hub.download_url_to_file(weights.url, str(path), hash_prefix=prefix, progress=True)
    return path, verify(path, prefix)


def check_fits(weights: PretrainedWeights, arch_spec: dict[str, Any]) -> None:
    """Refuse a data set the weights cannot serve (class count, RGB input) before loading anything."""
    where = f"teachers.{weights.arch}.pretrained"
    if arch_spec["num_classes"] != weights.num_classes:
        raise ConfigError(f"{where}: {weights.enum}.{weights.member} predicts {weights.num_classes} classes, "
                          f"but the prepared data set has {arch_spec['num_classes']}")
    if arch_spec["in_channels"] != 3:
        raise ConfigError(f"{where}: the weights take RGB images, but the prepared data set has "
                          f"{arch_spec['in_channels']} channel(s)")


def load_pretrained(model: nn.Module, weights: PretrainedWeights, download: bool) -> dict[str, Any]:
    """Load the verified weights into ``model`` (strict); return what provenance should record."""
    path, digest = fetch(weights, download)
    load_state(model, load_checkpoint(path, remedy=f"delete it and download {weights.url} again"), path)
    return {"weights": f"{weights.enum}.{weights.member}", "url": weights.url, "file": weights.filename,
            "sha256": digest}
