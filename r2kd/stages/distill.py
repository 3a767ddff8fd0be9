"""Stage `distill`: train one student run (pair x method x augment x seed) from the frozen teachers.

With ``runtime.share_teachers`` the run is trained together with the other due runs of its (pair,
seed), or its result is published from that cohort (r2kd.stages.cohort); the pieces here
(``load_frozen``, ``build_run``, ``write_outputs``, ``result_key``) serve both ways."""

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
from r2kd.methods.objective import DistillObjective, SharedPasses
from r2kd.modelfile import arch_spec, build, load_model, save_model
from r2kd.pipeline import METHODS as METHOD_SPECS
from r2kd.pipeline import code_name
from r2kd.models.complexity import complexity
from r2kd.pruning import set_bn_mode
from r2kd.runtime import (fast_layout, fast_path_enabled, graphs_enabled, resolve_amp, resolve_device, seed_everything,
                          set_threads)
from r2kd.runs import StudentRun, find_run
from r2kd.stages.csvlog import write_log
from r2kd.stages.dataset import Data, data_files, load_data
from r2kd.stages.pair import read_pair
from r2kd.stages.record import fingerprint, input_hashes, provenance, write_timing
from r2kd.train import FitResult, Trainer

VIEW_STREAM = 0x5EED  # the augmented view draws from its own stream, so toggling it keeps data order


def run(params: Params, pair: str, method: str, augment: str, seed: int) -> None:
    selected = find_run(params, pair, method, augment, seed)
    if params.runtime.share_teachers:
        from r2kd.stages import cohort  # the same runs, trained with the others of their (pair, seed)

        cohort.run(params, selected)
        return
    set_threads(params.runtime.threads)
    device = resolve_device(params.runtime.device, params.resources_for("distill").jobs_per_gpu)
    data_generator = seed_everything(seed, params.runtime.deterministic)
    view_generator = torch.Generator().manual_seed(view_seed(seed))
    data = load_data(params.distill.batch_size, device, data_generator, workers=params.runtime.workers)
    frozen = load_frozen(params, selected, data.meta, device, needs(selected.method))
    built = build_run(params, selected, data, device, frozen, data_generator, lambda view: view_generator)
    began = time.perf_counter()
    result = built.trainer.fit()
    if not world().is_main:  # rank 0 writes; the other processes of a multi-process run hold the same results
        barrier()
        return
    write_outputs(params, built, result, selected.dir, device, built.trainer.step_kind,
                  result_key=result_key(params, selected, data.meta, built.inputs))
    write_timing(selected.dir, wall_seconds=time.perf_counter() - began, train_seconds=result.train_seconds,
                 resumed_from_epoch=result.resumed_from_epoch)
    built.trainer.discard_state()
    barrier()


def result_key(params: Params, run: StudentRun, meta: dict, inputs: dict[str, str] | None = None) -> str:
    """A hash of everything ``run``'s result depends on (r2kd.stages.cohort); ``inputs``: the hashes
    of the run's input files, if already computed."""
    hparams = params.method_hparams(run.method, run.augment, run.pair)
    inputs = run_inputs(run, inputs)
    return fingerprint(code_name("distill", run.method), arch_spec(run.student, meta), params.distill.model_dump(),
                       hparams.model_dump(mode="json"), inputs, run.seed, params.prune.bn_mode,
                       params.runtime.result_settings())


def run_inputs(run: StudentRun, inputs: dict[str, str] | None = None) -> dict[str, str]:
    """The hashes of the files ``run`` reads: the data, its pair's teacher pin and its method's pin
    (r2kd.stages.pair_pruned); ``inputs``: those of the data and pair file, if already computed (a
    cohort shares them)."""
    if inputs is None:
        inputs = input_hashes([*data_files(), paths.pair_file(run.pair)])
    return {**inputs, **input_hashes([paths.method_pin(run.pair, run.method)])}


def view_seed(seed: int) -> int:
    return seed * 1_000_003 + VIEW_STREAM


def needs(method: str) -> tuple[str, ...]:
    """The frozen networks ``method`` runs: "teacher", "pruned" (the pair file verifies exactly these)."""
    cls = METHODS[method]
    return tuple(role for role, used in (("teacher", cls.uses_teacher), ("pruned", cls.uses_pruned_teacher)) if used)


def load_frozen(params: Params, run: StudentRun, meta: dict, device: torch.device,
                roles: tuple[str, ...]) -> dict[str, torch.nn.Module]:
    """The frozen networks of ``run``'s pair, as the pair file pins them (by SHA-256): the teacher in
    eval mode, the pruned teacher with BatchNorm as prune.bn_mode says; channels_last on the fast path."""
    # a cohort loads the pruned teacher for all its runs: any method that runs it pins the same file
    pin_method = next((m for m in (run.method, *params.methods) if METHOD_SPECS[m].uses_pruned_teacher), None)
    teacher_file, pruned_file = read_pair(run.pair, run.teacher, verify=roles, pin_method=pin_method)
    spec = arch_spec(run.teacher, meta)  # a pruned file records its teacher's architecture
    frozen = {}
    if "teacher" in roles:
        frozen["teacher"] = set_bn_mode(load_model(teacher_file, spec, device=device), "eval")
    if "pruned" in roles:
        frozen["pruned"] = set_bn_mode(load_model(pruned_file, spec, device=device), params.prune.bn_mode)
    if fast_path_enabled(params.runtime.fast_path, device):  # rounding may change; docs/performance.md
        frozen = {name: fast_layout(m) for name, m in frozen.items()}
    return frozen


@dataclass
class BuiltRun:
    """One student run, ready to train: what :func:`write_outputs` records about it comes from here."""

    run: StudentRun
    spec: dict
    hparams: object  # the method's params model
    method: object  # the Method instance
    inputs: dict[str, str]
    model: torch.nn.Module
    trainer: Trainer
    data: Data
    amp: str


def build_run(params: Params, run: StudentRun, data: Data, device: torch.device, frozen: dict[str, torch.nn.Module],
              data_generator: torch.Generator, view_generator: Callable[[str], torch.Generator],
              shared: SharedPasses | None = None, inputs: dict[str, str] | None = None) -> BuiltRun:
    """The student, objective and trainer of ``run``; ``frozen`` and the generators may be shared
    (``view_generator(view)``: the generator the run's view kind draws from)."""
    hparams = params.method_hparams(run.method, run.augment, run.pair)
    method_cls = METHODS[run.method]
    chosen = method_cls(hparams)
    recipe = params.distill
    amp = resolve_amp(params.runtime.amp, device)
    fast = fast_path_enabled(params.runtime.fast_path, device)
    torch.manual_seed(run.seed)  # student initialisation depends on the seed only
    spec = arch_spec(run.student, data.meta)
    model = build(spec).to(device)
    if fast:  # channels_last everywhere (rounding may change; docs/performance.md)
        model = fast_layout(model)
    teacher_model = frozen.get("teacher") if method_cls.uses_teacher else None
    pruned_model = frozen.get("pruned") if method_cls.uses_pruned_teacher else None
    inputs = run_inputs(run, inputs)
    view_generator = view_generator(chosen.aug_view)
    objective = DistillObjective(
        method=chosen,
        # On N processes each runs its shard of the global batch and returns the whole batch's logits.
        teacher=parallel.frozen(teacher_model, device, sync_bn=False),  # eval mode: per sample
        pruned=parallel.frozen(pruned_model, device, sync_bn=params.runtime.sync_frozen_bn),
        view_generator=view_generator,
        mean=data.meta["mean"],
        std=data.meta["std"],
        fast=fast,
        shared=shared,
    )
    trainer = Trainer(
        model=model,
        recipe=recipe,
        train_batches=data.train,
        test_batches=data.test,
        objective=objective,
        generators={"data": data_generator, "view": view_generator},
        state_path=paths.state_file(run.dir),
        fingerprint=fingerprint(code_name("distill", run.method), spec, recipe.model_dump(), hparams.model_dump(),
                                inputs, run.seed, params.prune.bn_mode, params.runtime.result_settings()),
        label=f"{run.method}/{run.augment} s{run.seed}",
        amp=amp,
        graphs=graphs_enabled(fast, device, amp),
        modules_to_save={"pruned": pruned_model} if pruned_model is not None else {},
        forward_model=parallel.for_training(model, device),
    )
    return BuiltRun(run, spec, hparams, chosen, inputs, model, trainer, data, amp)


def write_outputs(params: Params, built: BuiltRun, result: FitResult, out_dir: Path, device: torch.device,
                  step_kind: str, **extra: object) -> None:
    """The run's declared outputs in ``out_dir``: model.pt, log.csv, metrics.json, provenance.json."""
    run = built.run
    save_model(out_dir / "model.pt", built.model, built.spec)
    write_log(out_dir / "log.csv", result.history)
    # metrics.json holds numbers only, accuracy first: it is what `dvc exp show` and `dvc metrics` list.
    write_json(out_dir / "metrics.json", {
        "best_top1": result.best_top1,
        "last_top1": result.last["test_top1"],
        "best_epoch": result.best_epoch,
        "last_top5": result.last["test_top5"],
        **complexity(built.model, built.data.input_shape),
    })
    keys = ["data", "distill", f"method_params.{run.method}", f"pairs.{run.pair}", "prune.bn_mode", "runtime"]
    write_json(out_dir / "provenance.json", provenance(
        params, keys, built.inputs, run.seed, device, role="student", dataset=built.data.meta["name"], pair=run.pair,
        teacher=run.teacher, student=run.student, method=run.method, augment=run.augment,
        aug_view=built.method.aug_view, method_hparams=built.hparams.model_dump(mode="json"), step=step_kind,
        world_size=world().world_size, **extra,
    ))
