"""The ``data`` section of params.yaml lives in the schema (r2kd/config.py); re-exported here."""

from r2kd.config import DataConfig, DatasetName

__all__ = ["DataConfig", "DatasetName"]
