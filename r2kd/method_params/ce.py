"""Cross-entropy alone (the baseline without a teacher): the hyper-parameters of `method_params.ce` (r2kd/methods/ce.py runs them)."""

from pydantic import Field

from r2kd.config import MethodParams

USES_PRUNED_TEACHER = False  # its students depend on the pair's pruned teacher


class CEParams(MethodParams):
    ce_weight: float = Field(1.0, gt=0)


PARAMS = CEParams
