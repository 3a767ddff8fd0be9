"""DIST (Huang et al. 2022): the hyper-parameters of `method_params.dist` (r2kd/methods/dist.py runs them)."""

from pydantic import Field

from r2kd.config import MethodParams

USES_PRUNED_TEACHER = False  # its students depend on the pair's pruned teacher


class DISTParams(MethodParams):
    temperature: float = Field(4.0, gt=0)
    beta: float = Field(2.0, ge=0, description="weight of the inter-class (per sample) term")
    gamma: float = Field(2.0, ge=0, description="weight of the intra-class (per class) term")
    ce_weight: float = Field(1.0, ge=0)


PARAMS = DISTParams
