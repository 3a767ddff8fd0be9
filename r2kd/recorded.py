"""Which params a result was made with, as the result itself records them.

Each tool knows the params only of what it made itself (after `dvc exp run -S`, `dvc checkout` or
`dvc exp apply`, the files on disk were made with values Snakemake never saw), so every stage's
result records the values of its stage's keys under "params", and either tool can ask the result
(docs/architecture.md). Torch-free: it runs when Snakemake parses the workflow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r2kd.pipeline import STAGES

if TYPE_CHECKING:
    from r2kd.config import Params

UNRECORDED = object()

PARAMS_FILE = "params.yaml"
PARAMS_ENV = "R2KD_PARAMS"  # the params file Snakemake's jobs read (workflow/rules/common.smk)
OVERRIDES = "snakemake_config_overrides"  # a result's mark of params that are not params.yaml's


def params_file() -> str:
    """The params file a stage command reads: params.yaml, or, in a Snakemake job run with
    --config/--configfile overrides, the effective params Snakemake validated and wrote
    (``$R2KD_PARAMS``, .r2kd/snakemake/params.yaml). A DVC stage always reads params.yaml, the file
    DVC tracks, whatever the environment says."""
    if os.environ.get("DVC_STAGE"):
        return PARAMS_FILE
    return os.environ.get(PARAMS_ENV) or PARAMS_FILE


def overridden() -> str | None:
    """The effective params file when this process reads another file than params.yaml."""
    path = params_file()
    return None if Path(path).resolve() == Path(PARAMS_FILE).resolve() else path


def stage_keys(stage: str, **args: Any) -> list[str]:
    """The params.yaml keys a stage reads (the pipeline table, r2kd/pipeline.py): each is listed under
    the stage's `params` in dvc.yaml and in its Snakemake params stamp (tests/test_dag.py), and
    recorded with its result."""
    return STAGES[stage].params_keys(**args)


def params_record(params: Params, stage: str, **wildcards: Any) -> dict[str, Any]:
    """The values of a stage's keys, as its result records them (under "params")."""
    from r2kd.config import section

    return mark_overrides({key: section(params, key) for key in stage_keys(stage, **wildcards)})


def mark_overrides(record: dict[str, Any]) -> dict[str, Any]:
    """A result made with Snakemake --config/--configfile overrides says so next to its values
    (which are the effective ones): ``"snakemake_config_overrides": "<the params file it read>"``."""
    other = overridden()
    return {**record, OVERRIDES: other} if other else record


def recorded_value(recorded: dict[str, Any], dotted: str) -> Any:
    """The value of params key ``dotted`` in a provenance record's ``params``, which holds whole
    sections under their own dotted keys (``"runtime"``, ``"method_params.kd"``): the longest
    recorded prefix of the key, walked down. UNRECORDED when the record does not hold it."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in recorded:
            node = recorded[prefix]
            for part in parts[cut:]:
                if not isinstance(node, dict) or part not in node:
                    return UNRECORDED
                node = node[part]
            return node
    return UNRECORDED


def made_with(provenance: Path, values: dict[str, Any]) -> bool | None:
    """Whether the result recorded in ``provenance`` was made with these params values.

    True: it records every one of them, equal; False: it records another value for one of them;
    None: no readable record, or a key it does not record (the caller cannot tell).
    """
    try:
        recorded = json.loads(Path(provenance).read_text())["params"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(recorded, dict):
        return None
    found = {key: recorded_value(recorded, key) for key in values}
    if any(value is UNRECORDED for value in found.values()):
        return None
    return found == values
