"""Where every artefact lives. dvc.yaml and workflow/rules declare the same paths; tests/test_dag.py
checks that both tools agree with this module."""

from __future__ import annotations

import re
from pathlib import Path

from r2kd.pipeline import STAGES

PREPARED = Path("data/prepared")
RUNS = Path("runs")
REPORTS = Path("reports")
# The `corrupt` stage: the prepared test split under 15 corruptions x 5 severities, drawn once.
CORRUPTED = Path("data/corrupted")
CORRUPTED_TEST = CORRUPTED / "test_c.pt"
CORRUPTED_META = CORRUPTED / "meta.json"
EVAL = REPORTS / "eval.json"  # the `evaluate` stage's one output (deterministic)
# The `export` stage: ONNX files under EXPORT, mirroring runs/ (export_file); EXPORT_RECORD is
# deterministic (hashes, sizes, check verdicts, failures). LATENCY holds what a clock measured
# (latency, throughput, the measured logit differences): outside every output, like TIMING, so a
# rerun changes no tracked hash; the report's latency plot reads it when it is there.
EXPORT = RUNS / "export"
EXPORT_RECORD = EXPORT / "export.json"
# Written by the `check` stage once params.yaml validates; every other stage depends on it, so
# neither tool runs a stage (or deletes its outputs) for a params.yaml that did not validate.
CHECKED = RUNS / "checked.txt"
CODE_STAMPS = RUNS / "code"  # <stage>.json: written by `check`, the one code dep of each DVC stage (r2kd/stagecode.py)
# Resume state lives outside every declared output: DVC deletes outputs before rerunning a stage,
# and a checkpoint there would be lost exactly when it is needed.
STATE = Path(".r2kd/state")
TIMING = Path(".r2kd/timing")  # wall-clock times: not results, so outside every output
LATENCY = TIMING / "export-latency.json"
GPU_SLOTS = Path(".r2kd/gpu-slots")  # r2kd.gpu_slots: which job holds which GPU


def teacher_dir(arch: str) -> Path:
    return RUNS / "teachers" / arch


def pruned_dir(arch: str) -> Path:
    return RUNS / "pruned" / arch


def pair_file(pair: str) -> Path:
    return RUNS / "pairs" / f"{pair}.json"


def pins_dir(pair: str) -> Path:
    """The `pair_pruned` stage's output: per method, the pruned-teacher file its students run (or none)."""
    return RUNS / "pairs" / pair


def method_pin(pair: str, method: str) -> Path:
    return pins_dir(pair) / f"{method}.json"


def student_dir(pair: str, method: str, augment: str, seed: int) -> Path:
    return cohort_dir(pair, seed) / f"{method}-{augment}"


def cohort_dir(pair: str, seed: int) -> Path:
    """Every run of one pair and seed: the output of a `distill_cohort` stage, for a cohort seed."""
    return RUNS / "students" / pair / f"s{seed}"


def export_file(model_file: Path) -> Path:
    """The ONNX file of a model file under runs/: runs/X/model.pt -> runs/export/X/model.onnx."""
    return EXPORT / Path(model_file).relative_to(RUNS).with_suffix(".onnx")


def state_file(run_dir: Path) -> Path:
    """Resume checkpoint of the run writing to ``run_dir`` (unique per run: no two jobs share one)."""
    return STATE / run_dir.relative_to(RUNS) / "resume.pt"


def timing_file(run_dir: Path) -> Path:
    return TIMING / run_dir.relative_to(RUNS) / "timing.json"


def producer(path: Path) -> str | None:
    """The command (and DVC stage) that writes ``path``, from the pipeline table (r2kd/pipeline.py):
    the way out when an input is missing."""
    text = Path(path).as_posix()
    for stage in STAGES.values():
        for template in stage.outputs:
            directory = template.endswith("/")  # a directory output holds whatever is inside it
            pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + ("" if directory else "$")
            match = re.match(pattern, text + ("/" if directory and template.rstrip("/") == text else ""))
            if match:
                args = match.groupdict()
                return f"`{stage.cmd(**args).replace('workflow/scripts/r2kd', 'r2kd')}` (DVC stage {stage.dvc_name(**args)})"
    return None


def code_stamp(stage: str) -> Path:
    return CODE_STAMPS / f"{stage}.json"
