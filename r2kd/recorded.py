"""Which params a result was made with, as the result itself records them.

Snakemake knows the params behind an output only when it made that output itself, and DVC only
what it made: after `dvc exp run -S distill.lr=0.02`, `dvc checkout` or `dvc exp apply`, the files on
disk were made with params Snakemake never saw. So every stage's result records the values of its
stage's keys under "params" (``record_file`` says where), and either tool can ask the result
(workflow/rules/common.smk dates Snakemake's params stamps by it). Torch-free: it runs when
Snakemake parses the workflow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r2kd.pipeline import STAGES

if TYPE_CHECKING:
    from r2kd.config import Params

UNRECORDED = object()

def stage_keys(stage: str, **args: Any) -> list[str]:
    """The params.yaml keys a stage reads (the pipeline table, r2kd/pipeline.py): each is listed under
    the stage's `params` in dvc.yaml and in its Snakemake params stamp (tests/test_dag.py), and
    recorded with its result."""
    return STAGES[stage].params_keys(**args)


def record_file(stage: str, **args: Any) -> Path:
    """The output of a stage's job that records the params it was made with."""
    return STAGES[stage].record_path(**args)


def params_record(params: Params, stage: str, **wildcards: Any) -> dict[str, Any]:
    """The values of a stage's keys, as its result records them (under "params")."""
    from r2kd.config import section

    return {key: section(params, key) for key in stage_keys(stage, **wildcards)}


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
