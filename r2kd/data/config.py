"""The ``data`` section of params.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

DatasetName = Literal[
    "digits", "cifar10", "cifar100", "tiny_imagenet", "imagefolder", "mnist", "kmnist", "fashion_mnist"
]


class DataConfig(BaseModel):
    """Which dataset ``prepare`` materialises, where its source files are, and how much of it.

    ``train_limit`` / ``test_limit`` cap the number of images *per class* (the first ones in the
    source's order, after the digits split), so a capped set stays class-balanced and is the same
    on every run; they exist to make CPU smoke runs small, not to subsample for science.
    """

    model_config = ConfigDict(extra="forbid")

    name: DatasetName = "digits"
    # Where archives are (or will be downloaded to); for imagefolder, the folder holding train/ and val/.
    root: str = "data/raw"
    # Only with download: true is the network ever touched.
    download: bool = False
    # digits only: it ships as one set, so prepare makes a stratified split.
    test_fraction: float = Field(0.3, gt=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0)
    train_limit: int | None = Field(None, ge=1)
    test_limit: int | None = Field(None, ge=1)
    # imagefolder only: every image is resized to image_size x image_size.
    image_size: int | None = Field(None, ge=4, le=1024, validate_default=True)

    @field_validator("image_size", mode="after")
    @classmethod
    def _image_size_only_for_imagefolder(cls, value: int | None, info: ValidationInfo) -> int | None:
        name = info.data.get("name")
        if name == "imagefolder" and value is None:
            raise ValueError("data.image_size is required for name 'imagefolder' (images are resized to it)")
        if name is not None and name != "imagefolder" and value is not None:
            raise ValueError(
                f"data.image_size only applies to name 'imagefolder'; {name!r} has a fixed size, remove the key"
            )
        return value
