"""Stage `evaluate`: score every final model (teachers, pruned teachers, students) on the test set.

Beyond top-1/top-5 it records calibration (ECE) and accuracy under Gaussian pixel noise, a cheap
robustness probe: R2KD claims robustness, so the report should show more than clean accuracy.
"""

from __future__ import annotations

from r2kd import paths
from r2kd.config import Params
from r2kd.evaluation import evaluate
from r2kd.files import write_json
from r2kd.modelfile import arch_spec, load_model
from r2kd.models.complexity import complexity
from r2kd.runs import student_runs
from r2kd.runtime import resolve_amp, resolve_device, seed_everything, set_threads
from r2kd.stages.dataset import load_data

NOISE_STD = 0.1  # in [0, 1] pixel units, before normalisation

def run(params: Params) -> None:
    set_threads(params.runtime.threads)
    device = resolve_device(params.runtime.device)
    seed_everything(0, params.runtime.deterministic)
    data = load_data(256, device, generator=None)
    amp = resolve_amp(params.runtime.amp, device)
    records = []

    def add(kind: str, arch: str, path, **fields) -> None:
        model = load_model(path, arch_spec(arch, data.meta), device=device)
        scores = evaluate(model, data.test, amp, noise_std=NOISE_STD, data_std=data.meta["std"])
        records.append({"kind": kind, "path": str(path), "arch": arch, **fields, **scores,
                        **complexity(model, data.input_shape)})

    for arch in params.teachers:
        add("teacher", arch, paths.teacher_dir(arch) / "model.pt")
        add("pruned_teacher", arch, paths.pruned_dir(arch) / "model.pt", prune_method=params.prune.method,
            prune_ratio=params.prune.ratio)
    for run_ in student_runs(params):
        add("student", run_.student, run_.dir / "model.pt", pair=run_.pair, teacher=run_.teacher, method=run_.method,
            augment=run_.augment, seed=run_.seed)
    write_json(paths.REPORTS / "eval.json", {"dataset": data.meta["name"], "noise_std": NOISE_STD, "models": records})
