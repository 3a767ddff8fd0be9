"""Distiller wrappers, one per method, registered by the name used in params.yaml."""

from r2kd.distillers import ce, dist, dkd, kd, r2kd  # noqa: F401  (registration side effect)
from r2kd.distillers.base import AUG_SUFFIX, Distiller, DistillerParams
from r2kd.distillers.registry import DISTILLERS, get_distiller, make_distiller, register_distiller

__all__ = [
    "AUG_SUFFIX",
    "DISTILLERS",
    "Distiller",
    "DistillerParams",
    "get_distiller",
    "make_distiller",
    "register_distiller",
]
