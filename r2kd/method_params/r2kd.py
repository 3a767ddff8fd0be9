"""R2KD: the teacher and its pruned copy (METHOD.md): the hyper-parameters of `method_params.r2kd` (r2kd/methods/r2kd.py runs them)."""

from typing import Literal

from pydantic import Field

from r2kd.config import MethodParams, ViewName

USES_PRUNED_TEACHER = True  # its students depend on the pair's pruned teacher


class R2KDParams(MethodParams):
    aug_view: ViewName = "cutmix"
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(2.0, ge=0, description="weight of the value (correlation distance) term")
    beta: float = Field(2.0, ge=0, description="weight of the rank (Spearman) term")
    teacher_weight: float = Field(0.7, ge=0, le=1, description="w in w·z_t + (1 − w)·z_p")
    rank: Literal["hard", "soft"] = "hard"
    rank_sharpness: float = Field(10.0, gt=0, description="soft-rank sharpness, in row standard deviations")
    ce_weight: float = Field(1.0, ge=0)


PARAMS = R2KDParams
