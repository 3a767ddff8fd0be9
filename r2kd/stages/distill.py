"""Stage `distill`: train one student run (pair x method x augment x seed) from the frozen teachers.

The runs of a seed in `cohort_seeds` train together instead, in stage `distill_cohort`, which builds
each run with :func:`build_run` and writes its outputs with :func:`write_outputs`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from r2kd import parallel, paths
from r2kd.config import Params
from r2kd.distributed import barrier, world
from r2kd.files import write_json
from r2kd.methods import METHODS
from r2kd.methods.objective import DistillObjective, SharedPasses, frozen_roles
from r2kd.modelfile import arch_spec, build, load_model, save_model
from r2kd.pipeline import METHODS as METHOD_SPECS
from r2kd.pipeline import code_name
from r2kd.models.complexity import complexity
from r2kd.pruning import set_bn_mode
from r2kd.runs import StudentRun, find_run
from r2kd.runtime import RunSpec, fast_layout, seed_everything
from r2kd.stages.csvlog import write_log
from r2kd.stages.dataset import Data, data_files, load_data
from r2kd.stages.pair import read_pair
from r2kd.stages.record import fingerprint, input_hashes, metrics, provenance, write_timing
from r2kd.train import FitResult, Trainer

VIEW_STREAM = 0x5EED  # the augmented view draws from its own stream, so toggling it keeps data order


def run(params: Params, pair: str, method: str, augment: str, seed: int) -> None:
    selected = find_run(params, pair, method, augment, seed)
    rs = RunSpec.of(params.runtime, params.resources_for("distill").jobs_per_gpu)
    data_generator = seed_everything(seed, rs.deterministic)
    view_generator = torch.Generator().manual_seed(view_seed(seed))
    data = load_data(params.distill.batch_size, rs.device, data_generator, workers=rs.workers)
    frozen = load_frozen(params, rs, selected, data.meta, frozen_roles(METHODS[selected.method]))
    built = build_run(params, rs, selected, data, frozen, data_generator, lambda view: view_generator)
    began = time.perf_counter()
    result = built.trainer.fit()
    if not world().is_main:  # rank 0 writes; the other processes of a multi-process run hold the same results
        barrier()
        return
    write_outputs(params, built, result, selected.dir, rs.device, step=built.trainer.step_kind)
    write_timing(selected.dir, wall_seconds=time.perf_counter() - began, train_seconds=result.train_seconds,
                 resumed_from_epoch=result.resumed_from_epoch)
    built.trainer.discard_state()
    barrier()


def result_key(params: Params, run: StudentRun, meta: dict, inputs: dict[str, str] | None = None) -> str:
    """A hash of everything ``run``'s result depends on: the fingerprint of its resume state, and
    provenance.json's ``result_key``; ``inputs``: the hashes of the run's input files, if computed."""
    return fingerprint(code_name("distill", run.method), arch_spec(run.student, meta), params.distill.model_dump(),
                       params.method_hparams(run.method, run.augment, run.pair).model_dump(mode="json"),
                       run_inputs(run, inputs), run.seed, params.prune.bn_mode, params.runtime.result_settings())


def run_inputs(run: StudentRun, inputs: dict[str, str] | None = None) -> dict[str, str]:
    """The hashes of the files ``run`` reads: the data, its pair's teacher pin and its method's pin;
    ``inputs``: those of the data and pair file, if already computed (a cohort shares them)."""
    if inputs is None:
        inputs = input_hashes([*data_files(), paths.pair_file(run.pair)])
    return {**inputs, **input_hashes([paths.method_pin(run.pair, run.method)])}


def view_seed(seed: int) -> int:
    return seed * 1_000_003 + VIEW_STREAM


def load_frozen(params: Params, rs: RunSpec, run: StudentRun, meta: dict,
                roles: tuple[str, ...]) -> dict[str, torch.nn.Module]:
    """The frozen networks ``roles`` of ``run``'s pair, as the pair file pins them (by SHA-256): the teacher in
    eval mode, the pruned teacher with BatchNorm as prune.bn_mode says; channels_last on the fast path."""
    # a cohort loads the pruned teacher for all its runs: any method that runs it pins the same file
    pin_method = next((m for m in (run.method, *params.methods) if METHOD_SPECS[m].uses_pruned_teacher), None)
    teacher_file, pruned_file = read_pair(run.pair, run.teacher, verify=roles, pin_method=pin_method)
    arch = arch_spec(run.teacher, meta)  # a pruned file records its teacher's architecture
    load = {"teacher": (teacher_file, "eval"), "pruned": (pruned_file, params.prune.bn_mode)}
    frozen = {role: set_bn_mode(load_model(file, arch, device=rs.device), bn_mode)
              for role, (file, bn_mode) in load.items() if role in roles}
    return {role: fast_layout(m) for role, m in frozen.items()} if rs.fast else frozen  # rounding may change


@dataclass
class BuiltRun:
    """One student run, ready to train: what :func:`write_outputs` records about it comes from here."""

    run: StudentRun
    spec: dict
    method: object  # the Method instance
    inputs: dict[str, str]
    model: torch.nn.Module
    trainer: Trainer
    data: Data


def build_run(params: Params, rs: RunSpec, run: StudentRun, data: Data, frozen: dict[str, torch.nn.Module],
              data_generator: torch.Generator, view_generator: Callable[[str], torch.Generator],
              shared: SharedPasses | None = None, inputs: dict[str, str] | None = None) -> BuiltRun:
    """The student, objective and trainer of ``run``; ``frozen`` and the generators may be shared
    (``view_generator(view)``: the generator the run's view kind draws from)."""
    method_cls = METHODS[run.method]
    chosen = method_cls(params.method_hparams(run.method, run.augment, run.pair))
    device = rs.device
    torch.manual_seed(run.seed)  # student initialisation depends on the seed only
    spec = arch_spec(run.student, data.meta)
    model = build(spec).to(device)
    if rs.fast:  # channels_last everywhere (rounding may change; docs/performance.md)
        model = fast_layout(model)
    teacher_model = frozen.get("teacher") if method_cls.uses_teacher else None
    pruned_model = frozen.get("pruned") if method_cls.uses_pruned_teacher else None
    inputs = run_inputs(run, inputs)
    view_generator = view_generator(chosen.aug_view)
    objective = DistillObjective(
        method=chosen,
        # On N processes each runs its shard of the global batch and returns the whole batch's logits.
        teacher=parallel.frozen(teacher_model, device, sync_bn=False),  # eval mode: per sample
        pruned=parallel.frozen(pruned_model, device, sync_bn=rs.sync_frozen_bn),
        view_generator=view_generator, mean=data.meta["mean"], std=data.meta["std"], fast=rs.fast, shared=shared,
    )
    trainer = Trainer(
        model=model, recipe=params.distill, train_batches=data.train, test_batches=data.test, objective=objective,
        generators={"data": data_generator, "view": view_generator}, state_path=paths.state_file(run.dir),
        fingerprint=result_key(params, run, data.meta, inputs), label=f"{run.method}/{run.augment} s{run.seed}",
        amp=rs.amp, graphs=rs.graphs, forward_model=parallel.for_training(model, device),
        modules_to_save={"pruned": pruned_model} if pruned_model is not None else {},
    )
    return BuiltRun(run, spec, chosen, inputs, model, trainer, data)


def write_outputs(params: Params, built: BuiltRun, result: FitResult, out_dir: Path, device: torch.device,
                  **extra: object) -> None:
    """The run's declared outputs in ``out_dir``; ``extra``: more of provenance.json (``step``, ...)."""
    run = built.run
    save_model(out_dir / "model.pt", built.model, built.spec)
    write_log(out_dir / "log.csv", result.history)
    write_json(out_dir / "metrics.json", metrics(result, **complexity(built.model, built.data.input_shape)))
    keys = ["data", "distill", f"method_params.{run.method}", f"pairs.{run.pair}", "prune.bn_mode", "runtime"]
    write_json(out_dir / "provenance.json", provenance(
        params, keys, built.inputs, run.seed, device, role="student", dataset=built.data.meta["name"], pair=run.pair,
        teacher=run.teacher, student=run.student, method=run.method, augment=run.augment,
        aug_view=built.method.aug_view, method_hparams=built.method.params.model_dump(mode="json"),
        world_size=world().world_size, result_key=built.trainer.fingerprint, **extra,
    ))
