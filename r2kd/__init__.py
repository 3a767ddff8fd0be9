"""r2kd: Robustness-Reinforced Knowledge Distillation as a reproducible pipeline.

See README.md for the pipeline and ``../shared/METHOD.md`` (docs/METHOD.md) for the method.
"""

__version__ = "0.1.0"
