"""The runs params.yaml asks for: the same expansion as dvc.yaml's matrix and the Snakemake rules."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from r2kd import paths
from r2kd.config import Params
from r2kd.errors import ConfigError
from r2kd.pipeline import CHECK_CMD, STAGES


@dataclass(frozen=True)
class StudentRun:
    pair: str  # the key of `pairs` in params.yaml
    teacher: str
    student: str
    method: str
    augment: str
    seed: int
    in_cohort: bool = False  # its seed is one of `cohort_seeds`: stage distill_cohort trains it

    @property
    def dir(self) -> Path:
        return paths.student_dir(self.pair, self.method, self.augment, self.seed)

    @property
    def stage(self) -> str:
        """DVC's name for the stage that trains this run: built from content, so editing a list renames nothing."""
        return STAGES["distill_cohort" if self.in_cohort else "distill"].dvc_name(pair=self.pair, method=self.method,
                                                                                 augment=self.augment, seed=self.seed)


def student_runs(params: Params) -> list[StudentRun]:
    """In dvc.yaml's matrix order (pair, method, augment, seed), `seeds` before `cohort_seeds`."""
    return [
        StudentRun(key, pair.teacher, pair.student, method, augment, seed, seed in params.cohort_seeds)
        for (key, pair), method, augment, seed in itertools.product(
            params.pairs.items(), params.methods, params.augments, [*params.seeds, *params.cohort_seeds]
        )
    ]


def cohort_runs(params: Params, pair: str, seed: int) -> list[StudentRun]:
    """The runs a `distill_cohort` stage trains; arguments select a cohort of params.yaml."""
    if pair not in params.pairs or seed not in params.cohort_seeds:
        raise ConfigError(f"distill-cohort: no cohort {pair} {seed} in params.yaml "
                          f"(pairs {sorted(params.pairs)}, cohort_seeds {params.cohort_seeds})")
    return [run for run in student_runs(params) if (run.pair, run.seed) == (pair, seed)]


def find_run(params: Params, pair: str, method: str, augment: str, seed: int) -> StudentRun:
    """The run these CLI arguments select; arguments select a run of params.yaml, never override it."""
    for run in student_runs(params):
        if (run.pair, run.method, run.augment, run.seed) == (pair, method, augment, seed) and not run.in_cohort:
            return run
    cohort = f"; {seed} is a cohort seed: `r2kd distill-cohort {pair} {seed}`" if seed in params.cohort_seeds else ""
    raise ConfigError(f"distill: no run {pair} {method} {augment} {seed} in params.yaml "
                      f"(pairs {sorted(params.pairs)}, methods {params.methods}, augments {params.augments}, "
                      f"seeds {params.seeds}){cohort}")


def stage_commands(params: Params) -> list[tuple[str, str]]:
    """Every stage of the DAG with its command, in DVC's names, computed from params alone (no DVC
    import: `r2kd stages` stays fast at thousands of runs). tests/test_dag.py checks it against DVC."""
    values = {"teacher": [{"teacher": t} for t in params.teachers], "pair": [{"pair": p} for p in params.pairs],
              "pair-method-augment-seed": [vars(run) for run in student_runs(params) if not run.in_cohort],
              "pair-seed": [{"pair": p, "seed": s} for p in params.pairs for s in params.cohort_seeds], "": [{}]}
    return [("check", CHECK_CMD)] + [(stage.dvc_name(**args), stage.cmd(**args))
                                     for stage in STAGES.values() for args in values["-".join(stage.args)]]
