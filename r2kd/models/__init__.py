"""The model zoo: the CIFAR knowledge-distillation networks (RepDistiller / mdistiller definitions)
and the ImageNet networks of the KD literature (torchvision's ``tv_*``, mdistiller's ``mobilenet_v1``).

Every network keeps the parameter names and shapes of the published definitions, so their
``{"model": state_dict}`` checkpoints load with ``strict=True``; ``forward`` returns logits only.
See docs/models.md for the table of sizes and the small-input variants.
"""

from __future__ import annotations

from torch import nn

from r2kd.errors import ConfigError
# Importing the family modules fills the registry.
from r2kd.models import (  # noqa: F401
    mobilenetv1, mobilenetv2, resnet, shufflenetv1, shufflenetv2, torchvision_zoo, vgg, wrn,
)
from r2kd.models.complexity import count_macs, count_parameters
from r2kd.models.registry import BUILDERS

__all__ = ["available", "classifier_of", "count_macs", "count_parameters", "create"]


def available() -> list[str]:
    """Registered model names, sorted."""
    return sorted(BUILDERS)


def create(name: str, num_classes: int, *, in_channels: int = 3, input_size: int = 32) -> nn.Module:
    """Build ``name`` for ``num_classes`` classes and ``in_channels`` x ``input_size``² inputs.

    Only the first convolution (``in_channels``) and the classifier (``num_classes``) change shape;
    ``input_size`` only switches parameter-free pooling / stride choices (see docs/models.md).
    """
    if name not in BUILDERS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(available())}")
    sizes = {"num_classes": num_classes, "in_channels": in_channels, "input_size": input_size}
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model {key} must be a positive integer, got {value!r}")
    return BUILDERS[name](num_classes=num_classes, in_channels=in_channels, input_size=input_size)


def classifier_of(model: nn.Module) -> nn.Linear:
    """The layer producing the class logits (the pruner must keep its outputs).

    Zoo models name it in ``classifier_path`` (``fc``, ``linear``, ``classifier`` or
    ``classifier.0``); for any other module the last ``nn.Linear`` registered is taken.
    """
    path = getattr(model, "classifier_path", None)
    layer = model.get_submodule(path) if path else None
    if layer is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        layer = linears[-1] if linears else None
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"{type(model).__name__} has no nn.Linear classifier")
    return layer
