"""Hinton knowledge distillation: the hyper-parameters of `method_params.kd` (r2kd/methods/kd.py runs them)."""

from pydantic import Field

from r2kd.config import MethodParams

USES_PRUNED_TEACHER = False  # its students depend on the pair's pruned teacher


class KDParams(MethodParams):
    """Hinton KD with mdistiller's CIFAR-100 weights: 0.1·CE + 0.9·KD, T = 4."""

    temperature: float = Field(4.0, gt=0)
    ce_weight: float = Field(0.1, ge=0)
    kd_weight: float = Field(0.9, ge=0)


PARAMS = KDParams
