"""r2kd: Robustness-Reinforced Knowledge Distillation as a reproducible pipeline (README.md; method: docs/METHOD.md)."""

__version__ = "0.1.0"
