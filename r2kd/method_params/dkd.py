"""Decoupled KD (Zhao et al. 2022): the hyper-parameters of `method_params.dkd` (r2kd/methods/dkd.py runs them)."""

from pydantic import Field

from r2kd.config import MethodParams

USES_PRUNED_TEACHER = False  # its students depend on the pair's pruned teacher


class DKDParams(MethodParams):
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(1.0, ge=0, description="TCKD weight")
    beta: float = Field(8.0, ge=0, description="NCKD weight (mdistiller uses 2-8 depending on the pair)")
    warmup: int = Field(20, ge=0, description="epochs of linear warm-up of the DKD term; 0 disables")
    ce_weight: float = Field(1.0, ge=0)


PARAMS = DKDParams
