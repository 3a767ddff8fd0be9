"""Importing this package registers every dataset builder in :data:`r2kd.data.registry.DATASETS`."""

from r2kd.data.datasets import cifar, digits, imagefolder, imagenet, mnist, tiny_imagenet  # noqa: F401
