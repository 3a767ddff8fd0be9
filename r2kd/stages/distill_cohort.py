"""Stage `distill_cohort`: every run of one pair and one of `cohort_seeds`, trained together in one
process (r2kd.fast.cohort), each batch's views and frozen forwards computed once for all. Each run's
folder gets the bytes its own `distill` stage would write (provenance.json adds `cohort`); cohort.json
records the params (docs/architecture.md: why a cohort is one node of both DAGs).
"""

from __future__ import annotations

import time

import torch

from r2kd import paths
from r2kd.config import Params
from r2kd.errors import TrainingDiverged
from r2kd.fast.cohort import fit_cohort
from r2kd.files import write_json
from r2kd.methods import METHODS
from r2kd.methods.objective import SharedPasses, frozen_roles
from r2kd.pipeline import STAGES
from r2kd.recorded import params_record
from r2kd.runs import cohort_runs
from r2kd.runtime import RunSpec, seed_everything
from r2kd.stages.dataset import data_files, load_data
from r2kd.stages.distill import build_run, load_frozen, view_seed, write_outputs
from r2kd.stages.record import fingerprint, input_hashes, write_timing


def run(params: Params, pair: str, seed: int) -> None:
    runs = cohort_runs(params, pair, seed)
    stage = STAGES["distill_cohort"].dvc_name(pair=pair, seed=seed)
    rs = RunSpec.of(params.runtime, params.resources_for("distill_cohort").jobs_per_gpu)
    data_generator = seed_everything(seed, rs.deterministic)
    view_generators: dict[str, torch.Generator] = {}

    def view_generator(view: str) -> torch.Generator:
        # One per view kind: runs of one kind share its draws; another kind draws as if alone.
        return view_generators.setdefault(view, torch.Generator().manual_seed(view_seed(seed)))

    data = load_data(params.distill.batch_size, rs.device, data_generator, workers=rs.workers)
    roles = tuple(sorted({role for r in runs for role in frozen_roles(METHODS[r.method])}))
    frozen = load_frozen(params, rs, runs[0], data.meta, roles)
    shared = SharedPasses()
    inputs = input_hashes([*data_files(), paths.pair_file(pair)])
    built = [build_run(params, rs, r, data, frozen, data_generator, view_generator, shared, inputs) for r in runs]
    key = fingerprint("distill_cohort", [b.trainer.fingerprint for b in built])
    state_path = paths.state_file(paths.cohort_dir(pair, seed))
    began = time.perf_counter()
    outcomes, step_kind = fit_cohort([b.trainer for b in built], shared, state_path, key,
                                     f"{pair} s{seed}: {len(runs)} run{'s' * (len(runs) > 1)}")
    wall = time.perf_counter() - began
    if failed := [str(o) for o in outcomes if isinstance(o, TrainingDiverged)]:
        # nothing is written: a rerun with the same params resumes at the end and says this again
        raise TrainingDiverged(f"{stage}: {len(failed)} of {len(runs)} runs diverged:\n" + "\n".join(failed))
    for b, result in zip(built, outcomes):
        write_outputs(params, b, result, b.run.dir, rs.device, step=step_kind, cohort=stage)
        # the cohort's wall time is its runs'; train_seconds is each run's even share plus its evaluation
        write_timing(b.run.dir, wall_seconds=wall, train_seconds=result.train_seconds,
                     resumed_from_epoch=result.resumed_from_epoch, cohort_size=len(runs))
    write_json(paths.cohort_dir(pair, seed) / "cohort.json", {
        "params": params_record(params, "distill_cohort", pair=pair, seed=seed),
        "runs": [b.run.dir.name for b in built], "step": step_kind})
    state_path.unlink(missing_ok=True)
