"""Stage `distill`: train one student run (pair x method x augment x seed) from the frozen teachers."""

from __future__ import annotations

import time

import torch

from r2kd import parallel, paths
from r2kd.config import Params
from r2kd.distributed import barrier, resolve_device, world
from r2kd.files import write_json
from r2kd.methods import METHODS
from r2kd.methods.objective import DistillObjective
from r2kd.modelfile import arch_spec, build, load_model, save_model
from r2kd.models.complexity import complexity
from r2kd.pruning import set_bn_mode
from r2kd.runtime import fast_layout, fast_path_enabled, graphs_enabled, resolve_amp, seed_everything, set_threads
from r2kd.runs import find_run
from r2kd.stages.csvlog import write_log
from r2kd.stages.dataset import load_data
from r2kd.stages.pair import read_pair
from r2kd.stages.record import fingerprint, input_hashes, provenance, write_timing
from r2kd.train import Trainer

VIEW_STREAM = 0x5EED  # the augmented view draws from its own stream, so toggling it keeps data order


def run(params: Params, pair: str, method: str, augment: str, seed: int) -> None:
    selected = find_run(params, pair, method, augment, seed)
    teacher, student = selected.teacher, selected.student
    hparams = params.method_hparams(method, augment, pair)
    method_cls = METHODS[method]
    recipe = params.distill
    set_threads(params.runtime.threads)
    device = resolve_device(params.runtime.device, params.resources_for("distill").jobs_per_gpu)
    amp = resolve_amp(params.runtime.amp, device)
    fast = fast_path_enabled(params.runtime.fast_path, device)
    data_generator = seed_everything(seed, params.runtime.deterministic)
    view_generator = torch.Generator().manual_seed(seed * 1_000_003 + VIEW_STREAM)
    data = load_data(recipe.batch_size, device, data_generator, workers=params.runtime.workers)

    # The pair file pins the exact teacher files (by SHA-256) that this pair's students learn from.
    verify = tuple(role for role, used in (("teacher", method_cls.uses_teacher),
                                           ("pruned", method_cls.uses_pruned_teacher)) if used)
    teacher_file, pruned_file = read_pair(pair, teacher, verify=verify)
    teacher_spec = arch_spec(teacher, data.meta)  # a pruned file records its teacher's architecture
    teacher_model = pruned_model = None
    if method_cls.uses_teacher:  # frozen, in eval mode
        teacher_model = set_bn_mode(load_model(teacher_file, teacher_spec, device=device), "eval")
    if method_cls.uses_pruned_teacher:  # frozen, BatchNorm as prune.bn_mode says
        pruned_model = set_bn_mode(load_model(pruned_file, teacher_spec, device=device), params.prune.bn_mode)

    torch.manual_seed(seed)  # student initialisation depends on the seed only
    spec = arch_spec(student, data.meta)
    model = build(spec).to(device)
    if fast:  # channels_last everywhere (rounding may change; docs/performance.md)
        model, teacher_model, pruned_model = (fast_layout(m) if m is not None else None
                                              for m in (model, teacher_model, pruned_model))
    inputs = input_hashes([*data.files, paths.pair_file(pair)])
    out_dir = selected.dir
    chosen = method_cls(hparams)
    objective = DistillObjective(
        method=chosen,
        # On N processes each runs its shard of the global batch and returns the whole batch's logits.
        teacher=parallel.frozen(teacher_model, device, sync_bn=False),  # eval mode: per sample
        pruned=parallel.frozen(pruned_model, device, sync_bn=params.runtime.sync_frozen_bn),
        view_generator=view_generator,
        mean=data.meta["mean"],
        std=data.meta["std"],
        fast=fast,
    )
    trainer = Trainer(
        model=model,
        recipe=recipe,
        train_batches=data.train,
        test_batches=data.test,
        objective=objective,
        generators={"data": data_generator, "view": view_generator},
        state_path=paths.state_file(out_dir),
        fingerprint=fingerprint(spec, recipe.model_dump(), hparams.model_dump(), inputs, seed,
                                params.prune.bn_mode, params.runtime.result_settings()),
        label=f"{method}/{augment} s{seed}",
        amp=amp,
        graphs=graphs_enabled(fast, device, amp),
        modules_to_save={"pruned": pruned_model} if pruned_model is not None else {},
        forward_model=parallel.for_training(model, device),
    )
    began = time.perf_counter()
    result = trainer.fit()

    if not world().is_main:  # rank 0 writes; the other processes of a multi-process run hold the same results
        barrier()
        return
    save_model(out_dir / "model.pt", model, spec)
    write_log(out_dir / "log.csv", result.history)
    # metrics.json holds numbers only, accuracy first: it is what `dvc exp show` and `dvc metrics` list.
    write_json(out_dir / "metrics.json", {
        "best_top1": result.best_top1,
        "last_top1": result.last["test_top1"],
        "best_epoch": result.best_epoch,
        "last_top5": result.last["test_top5"],
        **complexity(model, data.input_shape),
    })
    keys = ["data", "distill", f"method_params.{method}", f"pairs.{pair}", "prune.bn_mode", "runtime"]
    write_json(out_dir / "provenance.json", provenance(
        params, keys, inputs, seed, device, role="student", dataset=data.meta["name"], pair=pair, teacher=teacher,
        student=student, method=method, augment=augment, aug_view=chosen.aug_view,
        method_hparams=hparams.model_dump(mode="json"), step=trainer.step_kind,
        world_size=world().world_size,
    ))
    write_timing(out_dir, wall_seconds=time.perf_counter() - began, train_seconds=result.train_seconds,
                 resumed_from_epoch=result.resumed_from_epoch)
    trainer.discard_state()
    barrier()
