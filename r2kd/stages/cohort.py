"""`distill` with ``runtime.share_teachers: true``: the first distill stage of a (pair, seed) trains
every run of that (pair, seed) that is due, together, sharing the frozen teachers' forwards
(r2kd.cohort); each other run's stage then only publishes its result.

The DAG does not change: each run keeps its own stage, outputs and params, so DVC and Snakemake
rerun exactly the runs whose inputs changed, and the cohort is just those runs. A result waits for
its own stage in ``.r2kd/cohort/<key>/``, outside every declared output, named by its *result key*:
a hash of everything the result depends on (the student's architecture, the recipe, the method's
params, the input files' hashes, the seed, the result-relevant runtime settings, the distill code's
hashes and the library versions). A stage publishes a waiting result only under its own current key,
so nothing trained for other params, inputs or code can be taken for its result.

Which runs are due: the stage's own run, and each other run of the (pair, seed) whose outputs are
missing or carry another result key (provenance.json's ``result_key``), with no result waiting.
One lock per (pair, seed) serialises cohorts: a second stage of the same (pair, seed) waits for the
first and then finds its result waiting. Under Snakemake on several cores such a stage holds a core
while it waits; on a cluster, where each job gets its own machine, keep ``share_teachers: false``
unless the runs of a (pair, seed) are grouped into one job.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import torch

from r2kd import paths
from r2kd.cohort import fit_cohort
from r2kd.config import Params
from r2kd.data.prepared import load_meta
from r2kd.errors import TrainingDiverged, UserError
from r2kd.files import atomic_path, read_json, write_json
from r2kd.lock import LOCKS, file_lock, process_alive
from r2kd.methods.objective import SharedPasses
from r2kd.runs import StudentRun, student_runs
from r2kd.runtime import resolve_device, seed_everything, set_threads
from r2kd.stages import distill
from r2kd.stages.dataset import data_files, load_data
from r2kd.stages.record import input_hashes, write_timing
from r2kd.train import FitResult, console

OUTPUTS = ("model.pt", "log.csv", "metrics.json", "provenance.json")
FAILED = "failed.json"  # a run that diverged in a cohort: its error, for its own stage to report


def run(params: Params, selected: StudentRun) -> None:
    meta = load_meta(paths.PREPARED)
    inputs = input_hashes([*data_files(), paths.pair_file(selected.pair)])  # the same for the whole cohort
    key = distill.result_key(params, selected, meta, inputs)
    if publish(key, selected.dir):
        return
    _raise_stored_failure(selected, key)
    with cohort_lock(selected):
        if publish(key, selected.dir):  # trained by the cohort we waited for
            return
        _raise_stored_failure(selected, key)
        keys = {r: distill.result_key(params, r, meta, inputs) for r in student_runs(params)
                if (r.pair, r.seed) == (selected.pair, selected.seed)}
        prune_stale(selected, set(keys.values()))
        due = [r for r in keys if r == selected or not _has_result(r, keys[r])]
        failed = train(params, due, keys, inputs)
    if selected in failed:
        _take_failure(key)  # reported here; nobody else will
        raise failed[selected]
    if not publish(key, selected.dir):
        raise UserError(f"{selected.stage}: the cohort finished but its result is missing from {cache_dir(key)}")


def cache_dir(key: str) -> Path:
    return paths.COHORT_RESULTS / key


def _take_failure(key: str) -> str | None:
    """The error a cohort stored for the run of ``key``, consumed: a rerun trains the run again."""
    marker = cache_dir(key) / FAILED
    try:
        error = read_json(marker)["error"]
    except (UserError, KeyError, TypeError):
        return None
    shutil.rmtree(cache_dir(key), ignore_errors=True)
    return error


def _raise_stored_failure(run: StudentRun, key: str) -> None:
    # A run that diverged in another stage's cohort is reported by its own stage, not trained again
    # within the same pass over the DAG (the same key gives the same divergence on the CPU).
    error = _take_failure(key)
    if error is not None:
        raise TrainingDiverged(f"{error} (it diverged in the cohort of {run.pair} seed {run.seed}; "
                               "run this stage again to train it again)")


def prune_stale(run: StudentRun, current: set[str]) -> None:
    """Drop what waits for ``run``'s (pair, seed) under a key no run has any more (older params, inputs
    or code: no stage would ever publish it), and staging folders of processes that are gone."""
    if not paths.COHORT_RESULTS.is_dir():
        return
    for entry in paths.COHORT_RESULTS.iterdir():
        if entry.name.startswith("."):  # .<key>.<pid>.tmp: a cohort writing, or one that died
            pid = entry.name.rsplit(".", 2)[-2] if entry.name.endswith(".tmp") else ""
            if pid.isdigit() and not process_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)
            continue
        if entry.name in current:
            continue
        for name in ("provenance.json", FAILED):
            try:
                record = read_json(entry / name)
            except (UserError, OSError):
                continue
            if isinstance(record, dict) and (record.get("pair"), record.get("seed")) == (run.pair, run.seed):
                shutil.rmtree(entry, ignore_errors=True)
            break


def publish(key: str, out_dir: Path) -> bool:
    """Copy the waiting result ``key`` into ``out_dir`` (each file atomically) and drop it from the cache."""
    entry = cache_dir(key)
    if not all((entry / name).is_file() for name in OUTPUTS):
        return False
    for name in OUTPUTS:
        with atomic_path(out_dir / name) as tmp:
            shutil.copyfile(entry / name, tmp)
    shutil.rmtree(entry, ignore_errors=True)
    return True


def _has_result(run: StudentRun, key: str) -> bool:
    """A result (or the record of a divergence) for ``key`` waits in the cache, or sits in the run's
    own outputs already."""
    if all((cache_dir(key) / name).is_file() for name in OUTPUTS) or (cache_dir(key) / FAILED).is_file():
        return True
    if not all((run.dir / name).is_file() for name in OUTPUTS):
        return False
    try:
        return read_json(run.dir / "provenance.json").get("result_key") == key
    except (UserError, AttributeError):
        return False


@contextlib.contextmanager
def cohort_lock(run: StudentRun) -> Iterator[None]:
    def wait(holder: str) -> None:
        console.print(f"[dim]{run.stage}: waiting for the cohort of {run.pair} seed {run.seed} ({holder})[/]")

    with file_lock(LOCKS / f"cohort-{run.pair}-s{run.seed}.lock", on_busy=wait):
        yield


def train(params: Params, due: list[StudentRun], keys: dict[StudentRun, str],
          inputs: dict[str, str] | None = None) -> dict[StudentRun, TrainingDiverged]:
    """Train ``due`` (runs of one pair and seed) together; leave each result in the cache under its
    key. Returns the runs whose training diverged, with their errors. ``inputs``: the hashes of the
    cohort's input files, if already computed."""
    first = due[0]
    set_threads(params.runtime.threads)
    device = resolve_device(params.runtime.device, params.resources_for("distill").jobs_per_gpu)
    data_generator = seed_everything(first.seed, params.runtime.deterministic)
    view_generators: dict[str, torch.Generator] = {}

    def view_generator(view: str) -> torch.Generator:
        # One per view kind: runs of one kind share its draws; another kind draws as if alone.
        return view_generators.setdefault(view, torch.Generator().manual_seed(distill.view_seed(first.seed)))

    data = load_data(params.distill.batch_size, device, data_generator, workers=params.runtime.workers)
    roles = tuple(sorted({role for r in due for role in distill.needs(r.method)}))
    frozen = distill.load_frozen(params, first, data.meta, device, roles)
    shared = SharedPasses()
    if inputs is None:
        inputs = input_hashes([*data_files(), paths.pair_file(first.pair)])
    built = [distill.build_run(params, r, data, device, frozen, data_generator, view_generator, shared, inputs)
             for r in due]
    trainers = [b.trainer for b in built]
    fingerprint = hashlib.sha256(json.dumps([t.fingerprint for t in trainers]).encode()).hexdigest()
    state_path = paths.STATE / "cohort" / f"{first.pair}-s{first.seed}-{fingerprint[:16]}.pt"
    label = f"{first.pair} s{first.seed}: {len(due)} run{'s' if len(due) > 1 else ''}"
    began = time.perf_counter()
    outcomes, step_kind = fit_cohort(trainers, shared, state_path, fingerprint, label)
    wall = time.perf_counter() - began
    failed = {}
    cohort = [r.stage for r in due]
    for b, outcome in zip(built, outcomes):
        if not isinstance(outcome, FitResult):
            failed[b.run] = outcome
            shutil.rmtree(cache_dir(keys[b.run]), ignore_errors=True)
            write_json(cache_dir(keys[b.run]) / FAILED, {"pair": b.run.pair, "seed": b.run.seed,
                                                        "stage": b.run.stage, "error": str(outcome)})
            continue
        key = keys[b.run]
        staging = paths.COHORT_RESULTS / f".{key}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        distill.write_outputs(params, b, outcome, staging, device, step_kind, result_key=key, cohort=cohort)
        shutil.rmtree(cache_dir(key), ignore_errors=True)
        os.replace(staging, cache_dir(key))
        # Timing is not an output: it goes to the run's own timing file now. The cohort's wall time
        # is shared by its runs; train_seconds is each run's even share plus its own evaluation.
        write_timing(b.run.dir, wall_seconds=wall, train_seconds=outcome.train_seconds,
                     resumed_from_epoch=outcome.resumed_from_epoch, cohort_size=len(due))
    state_path.unlink(missing_ok=True)
    return failed

