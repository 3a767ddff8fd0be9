"""Stage `train_teacher <arch>`: train one teacher, shared by every pair using it, or import it instead:
a verified checkpoint file (`checkpoint`) or torchvision's ImageNet weights (`pretrained`, r2kd/pretrained.py)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from r2kd import parallel, paths
from r2kd.config import Params
from r2kd.distributed import barrier, world
from r2kd.errors import CheckpointError, ConfigError
from r2kd.evaluation import evaluate
from r2kd.files import load_checkpoint, sha256_file, write_json
from r2kd.modelfile import arch_spec, build, load_state, save_model
from r2kd.models.complexity import complexity
from r2kd.pretrained import check_fits, load_pretrained, resolve
from r2kd.runtime import RunSpec, seed_everything
from r2kd.stages.csvlog import write_log
from r2kd.stages.dataset import load_data
from r2kd.stages.record import fingerprint, input_hashes, metrics, provenance, write_timing
from r2kd.train import FitResult, Trainer, cross_entropy_objective


def run(params: Params, arch: str) -> None:
    if arch not in params.teachers:
        raise ConfigError(f"train-teacher: {arch!r} is not a key of `teachers` in params.yaml ({sorted(params.teachers)})")
    source = params.teachers[arch]
    recipe = params.train_teacher
    rs = RunSpec.of(params.runtime, params.resources_for("train_teacher").jobs_per_gpu)
    device, amp = rs.device, rs.amp
    generator = seed_everything(recipe.seed, rs.deterministic)
    data = load_data(recipe.batch_size, device, generator, workers=rs.workers)
    spec = arch_spec(arch, data.meta)
    model = build(spec).to(device)
    out_dir = paths.teacher_dir(arch)
    inputs = input_hashes(data.files)
    began = time.perf_counter()

    trainer, weights_record = None, None
    if source.checkpoint:
        _import_checkpoint(model, source.checkpoint, source.checkpoint_sha256)
        inputs[source.checkpoint] = source.checkpoint_sha256.lower()
    elif source.pretrained:
        weights = resolve(arch, source.pretrained)
        check_fits(weights, spec)
        weights_record = load_pretrained(model, weights, download=params.data.download)
    else:
        trainer = Trainer(
            model=model, recipe=recipe, train_batches=data.train, test_batches=data.test,
            objective=cross_entropy_objective, generators={"data": generator}, state_path=paths.state_file(out_dir),
            fingerprint=fingerprint("train_teacher", spec, recipe.model_dump(), inputs, rs.settings),
            label=f"teacher {arch}", amp=amp, graphs=rs.graphs, forward_model=parallel.for_training(model, device),
        )
    result = trainer.fit() if trainer is not None else _imported(model, data, amp)

    if not world().is_main:  # rank 0 writes; the other processes of a multi-process run hold the same results
        barrier()
        return
    save_model(out_dir / "model.pt", model, spec)
    write_log(out_dir / "log.csv", result.history)
    write_json(out_dir / "metrics.json", metrics(result, **complexity(model, data.input_shape)))
    write_json(out_dir / "provenance.json", provenance(
        params, ["data", f"teachers.{arch}", "train_teacher", "runtime"], inputs, recipe.seed, device,
        role="teacher", arch=arch, imported=trainer is None, world_size=world().world_size,
        **({"pretrained": weights_record} if weights_record else {}),
    ))
    write_timing(out_dir, wall_seconds=time.perf_counter() - began, resumed_from_epoch=result.resumed_from_epoch)
    if trainer is not None:
        trainer.discard_state()
    barrier()


IMPORT_REMEDY = ("no stage writes an imported teacher: obtain a weights-only state dict (a file of tensors "
                 "only, {'model': state_dict} or a plain state dict) and set its path and SHA-256 under "
                 "`teachers` in params.yaml")


def _import_checkpoint(model: torch.nn.Module, path: str, sha256: str) -> None:
    """Load a published {"model": state_dict} (or plain state-dict) file after checking its SHA-256."""
    if not Path(path).is_file():
        raise CheckpointError(f"teacher checkpoint {path} does not exist")
    actual = sha256_file(path)
    if actual.lower() != sha256.lower():
        raise CheckpointError(f"teacher checkpoint {path}: SHA-256 is {actual}, params.yaml expects {sha256}")
    blob = load_checkpoint(path, remedy=IMPORT_REMEDY)
    state = blob.get("model", blob) if isinstance(blob, dict) else blob
    load_state(model, state, path)


def _imported(model: torch.nn.Module, data, amp: str) -> FitResult:
    """An imported teacher's result: one log row, its test scores, as epoch 0."""
    scores = evaluate(model, data.test, amp)
    row = {"epoch": 0, "test_top1": scores["top1"], "test_top5": scores["top5"], "test_loss": scores["nll"]}
    return FitResult([row], row["test_top1"], 0, row, train_seconds=0.0)

