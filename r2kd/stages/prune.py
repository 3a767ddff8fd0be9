"""Stage `prune <arch>`: prune a deep copy of the trained teacher once (never retrained)."""

from __future__ import annotations

from r2kd import paths
from r2kd.config import Params
from r2kd.errors import ConfigError
from r2kd.evaluation import evaluate
from r2kd.files import write_json
from r2kd.modelfile import arch_spec, load_model, save_model
from r2kd.pruning import prune_teacher
from r2kd.runtime import resolve_amp, resolve_device, seed_everything, set_threads
from r2kd.stages.dataset import load_data
from r2kd.stages.record import input_hashes, provenance, write_timing


EVAL_BATCH = 256  # scoring only: eval-mode networks give the same numbers at any batch size


def run(params: Params, arch: str) -> None:
    if arch not in params.teachers:
        raise ConfigError(f"prune: {arch!r} is not a key of `teachers` in params.yaml ({sorted(params.teachers)})")
    set_threads(params.runtime.threads)
    device = resolve_device(params.runtime.device)
    amp = resolve_amp(params.runtime.amp, device)
    seed_everything(params.train_teacher.seed, params.runtime.deterministic)
    data = load_data(EVAL_BATCH, device, generator=None)
    spec = arch_spec(arch, data.meta)
    teacher_file = paths.teacher_dir(arch) / "model.pt"
    teacher = load_model(teacher_file, spec, device=device)

    example = next(iter(data.test))[0][:2]
    result = prune_teacher(teacher, example, params.prune)
    pruned = result.model.eval()
    before = evaluate(teacher, data.test, amp)
    after = evaluate(pruned, data.test, amp)

    out_dir = paths.pruned_dir(arch)
    stats = result.stats.as_dict()
    # the artefact must be a pure function of its inputs: wall-clock time goes to timing only
    stable_stats = {k: v for k, v in stats.items() if k != "seconds"}
    save_model(out_dir / "model.pt", pruned, spec, structure=result.structure, stats=stable_stats)
    write_json(
        out_dir / "prune.json",
        {
            "top1_before": before["top1"],
            "top1_after": after["top1"],
            "top5_after": after["top5"],
            "params": stats["params_after"],
            "macs": stats["macs_after"],
            "params_before": stats["params_before"],
            "macs_before": stats["macs_before"],
            "nonzero_fraction_before": stats["nonzero_weight_fraction_before"],
            "nonzero_fraction_after": stats["nonzero_weight_fraction_after"],
        },
    )
    write_json(out_dir / "provenance.json", provenance(
        params, ["prune"], input_hashes([teacher_file, *data.files]), params.train_teacher.seed, device,
        role="pruned_teacher", arch=arch, method=params.prune.method, ratio=params.prune.ratio,
    ))
    write_timing(out_dir, prune_seconds=stats["seconds"])
