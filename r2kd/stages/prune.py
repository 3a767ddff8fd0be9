"""Stage `prune <arch>`: prune a deep copy of the trained teacher once (with `torch_pruning` optionally
fine-tuned) and measure it against the teacher. prune.json holds only deterministic numbers; wall-clock
times go to the timing file (docs/prune.md, "What the prune stage records").
"""

from __future__ import annotations

import time

import torch

from r2kd import paths
from r2kd.config import Params
from r2kd.errors import ConfigError
from r2kd.evaluation import evaluate
from r2kd.files import write_json
from r2kd.modelfile import arch_spec, load_model, save_model
from r2kd.pruning import prune_teacher
from r2kd.pruning.measure import compare_many, frozen_copy, speed
from r2kd.runtime import RunSpec, seed_everything
from r2kd.stages.dataset import load_data
from r2kd.stages.record import fingerprint, input_hashes, provenance, write_timing
from r2kd.train import Trainer, cross_entropy_objective


EVAL_BATCH = 256  # scoring only: eval-mode networks give the same numbers at any batch size
SPEED_BATCH = 64  # forward time is measured on one batch of this many test images
MEASURE_SEED = 0  # order of the test images in the train-mode BatchNorm comparison
# Batch size of the train-mode BatchNorm comparison: the reference's batch (METHOD.md §7). A teacher
# stage does not read student parameters (distill.batch_size), so it is fixed here.
MEASURE_BATCH = 64


def run(params: Params, arch: str) -> None:
    if arch not in params.teachers:
        raise ConfigError(f"prune: {arch!r} is not a key of `teachers` in params.yaml ({sorted(params.teachers)})")
    config = params.prune
    rs = RunSpec.of(params.runtime, params.resources_for("prune").jobs_per_gpu)
    device, amp = rs.device, rs.amp
    generator = seed_everything(params.train_teacher.seed, rs.deterministic)
    data = load_data(EVAL_BATCH, device, generator=None, workers=rs.workers)
    spec = arch_spec(arch, data.meta)
    teacher_file = paths.teacher_dir(arch) / "model.pt"
    teacher = load_model(teacher_file, spec, device=device)
    out_dir = paths.pruned_dir(arch)
    inputs = input_hashes([teacher_file, *data.files])

    example = next(iter(data.test))[0][:2]
    result = prune_teacher(teacher, example, config)
    pruned = result.model.eval()
    trainer, finetune, finetune_seconds = None, {}, 0.0
    if config.finetune.epochs > 0:
        finetune["top1_after_before_finetune"] = evaluate(pruned, data.test, amp)["top1"]
        began = time.perf_counter()
        trainer, history = _finetune(params, rs, arch, pruned, spec, inputs, generator)
        finetune_seconds = time.perf_counter() - began
        finetune["finetune_test_top1"] = [row["test_top1"] for row in history]
        pruned.eval()
    before = evaluate(teacher, data.test, amp)
    after = evaluate(pruned, data.test, amp)

    # Teacher vs pruned teacher on the same batches, in the BatchNorm mode distillation uses (with
    # train mode, batch statistics depend on the batch: the reference's batch size, one fixed shuffled
    # order, so no batch is single-class) and in eval mode.
    order = torch.randperm(int(data.test.labels.numel()), generator=torch.Generator().manual_seed(MEASURE_SEED))
    batches = data.test.subset(order, MEASURE_BATCH)
    others = {"as_distilled": frozen_copy(pruned, config.bn_mode), "eval_mode": frozen_copy(pruned, "eval")}
    if config.bn_mode == "train":  # what train-mode BatchNorm alone costs: the unpruned teacher in it
        others["teacher_bn_train_vs_eval"] = frozen_copy(teacher, "train")
    scores = compare_many(teacher, others, batches, amp)

    stats = result.stats.as_dict()
    # the artefact must be a pure function of its inputs: wall-clock time goes to timing only
    stable_stats = {k: v for k, v in stats.items() if k != "seconds"}
    save_model(out_dir / "model.pt", pruned, spec, structure=result.structure, stats=stable_stats)
    write_json(out_dir / "prune.json", {
        "top1_before": before["top1"], "top1_after": after["top1"], "top5_after": after["top5"],
        "params": stats["params_after"], "macs": stats["macs_after"],
        "params_before": stats["params_before"], "macs_before": stats["macs_before"],
        "nonzero_fraction_before": stats["nonzero_weight_fraction_before"],
        "nonzero_fraction_after": stats["nonzero_weight_fraction_after"],
        "method": config.method, "ratio": config.ratio, "round_to": config.round_to,
        "finetune_epochs": config.finetune.epochs,
        # as_distilled: the pruned teacher in prune.bn_mode, shuffled test batches of MEASURE_BATCH
        "bn_mode": config.bn_mode, "measure_batch_size": MEASURE_BATCH,
        # float64 sums over a fixed order: deterministic; rounding only keeps the JSON readable
        **{name: {k: round(v, 10) for k, v in score.items()} for name, score in scores.items()},
        **finetune,
    })
    write_json(out_dir / "provenance.json", provenance(
        params, ["data", "prune", "train_teacher.seed", "runtime"], inputs, params.train_teacher.seed, device,
        role="pruned_teacher", arch=arch, method=config.method, ratio=config.ratio,
    ))
    count = min(SPEED_BATCH, int(data.test.labels.numel()))
    speed_x = next(iter(data.test.subset(torch.arange(count), SPEED_BATCH)))[0]
    write_timing(out_dir, prune_seconds=stats["seconds"], finetune_seconds=finetune_seconds,
                 forward_batch=int(speed_x.shape[0]), device=str(device),
                 **speed(teacher, pruned, speed_x, config.bn_mode, repeats=7))
    if trainer is not None:
        trainer.discard_state()


def _finetune(params: Params, rs: RunSpec, arch: str, pruned: torch.nn.Module, spec: dict, inputs: dict[str, str],
              generator: torch.Generator) -> tuple[Trainer, list[dict]]:
    """Recovery fine-tune of the structurally pruned copy: plain CE on the train split."""
    recipe = params.prune.finetune.recipe()
    pruned.requires_grad_(True)
    data = load_data(recipe.batch_size, rs.device, generator, workers=rs.workers)
    trainer = Trainer(
        model=pruned, recipe=recipe, train_batches=data.train, test_batches=data.test,
        objective=cross_entropy_objective, generators={"data": generator},
        state_path=paths.state_file(paths.pruned_dir(arch)), label=f"fine-tune pruned {arch}", amp=rs.amp,
        fingerprint=fingerprint("prune", spec, params.prune.model_dump(), params.train_teacher.seed, inputs,
                                rs.settings),
    )
    return trainer, trainer.fit().history
