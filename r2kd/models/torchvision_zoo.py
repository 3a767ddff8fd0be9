"""torchvision's ImageNet networks (ResNet-18/34/50, MobileNet-V2), registered as ``tv_<name>``.

torchvision's own builders with ``weights=None``, so its parameter names and published ImageNet weights
(r2kd/pretrained.py) apply unchanged (docs/models.md, "ImageNet networks"). torchvision is imported
inside the builder: importing it costs about 1.5 s, which stages that never build one should not pay.
"""

from __future__ import annotations

from torch import nn

from r2kd.models.registry import register_variants

# r2kd name -> (torchvision builder name, path of the stem convolution, path of the classifier).
# torchvision.models.get_model(<builder name>) and get_model_weights(<builder name>) take the same name.
TORCHVISION_NAMES: dict[str, tuple[str, str, str]] = {
    "tv_resnet18": ("resnet18", "conv1", "fc"),
    "tv_resnet34": ("resnet34", "conv1", "fc"),
    "tv_resnet50": ("resnet50", "conv1", "fc"),
    "tv_mobilenet_v2": ("mobilenet_v2", "features.0.0", "classifier.1"),
}


def torchvision_name(name: str) -> str:
    """The torchvision builder name of the r2kd model ``name`` (KeyError for non-torchvision models)."""
    return TORCHVISION_NAMES[name][0]


def replace_stem(model: nn.Module, path: str, in_channels: int) -> None:
    """Swap the convolution at ``path`` for one taking ``in_channels`` inputs, otherwise identical
    and initialised as torchvision initialises convolutions (Kaiming normal, fan-out)."""
    old = model.get_submodule(path)
    if not isinstance(old, nn.Conv2d) or old.groups != 1:
        raise TypeError(f"{path} is not a plain Conv2d")
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding,
                    dilation=old.dilation, bias=old.bias is not None, padding_mode=old.padding_mode)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent), leaf, new)


def _build(tv_name: str, stem: str, classifier: str, *, num_classes: int, in_channels: int,
           input_size: int) -> nn.Module:
    """torchvision's ``tv_name``, randomly initialised."""
    from torchvision import models as tv_models

    model = tv_models.get_model(tv_name, weights=None, num_classes=num_classes)
    if in_channels != 3:
        replace_stem(model, stem, in_channels)
    model.classifier_path = classifier  # read by r2kd.models.classifier_of (the pruner keeps it)
    return model


register_variants(TORCHVISION_NAMES, _build)
