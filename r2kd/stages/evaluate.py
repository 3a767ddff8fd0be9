"""Stage `evaluate`: score every final model (teachers, pruned teachers, students) on the test set.

Beyond top-1/top-5: calibration before and after temperature scaling, top-1 under Gaussian pixel noise,
with `evaluate.corruptions` top-1 and mCE under the corrupted set, and each student's fidelity to its
teacher (docs/robustness.md#scores). Everything is computed from logits on the CPU in float64:
reports/eval.json is the same bytes on every run with the same inputs.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from r2kd import paths
from r2kd.config import Params
from r2kd.data.corrupted import CorruptedData, load_corrupted
from r2kd.data.loader import BatchIterator
from r2kd.evaluation import agreement, calibration, evaluate, fit_temperature, kl_divergence, predict, top1
from r2kd.files import progress, write_json
from r2kd.modelfile import arch_spec, load_model
from r2kd.models.complexity import complexity
from r2kd.workers import cpu_workers, map_in_order
from r2kd.recorded import params_record
from r2kd.runs import student_runs
from r2kd.runtime import resolve_amp, resolve_device, seed_everything, set_threads
from r2kd.stages.dataset import load_data

NOISE_STD = 0.1  # in [0, 1] pixel units, before normalisation
CORRUPTED_BATCH = 500
CALIBRATION_FIT = ("2-fold cross-fitting on the test split (no validation split exists): T fitted on the "
                   "even positions scores the odd ones and vice versa; 'temperature' is the fit on all of it, "
                   "used for the corrupted set")


def run(params: Params) -> None:
    set_threads(params.runtime.threads)
    device = resolve_device(params.runtime.device, params.resources_for("evaluate").jobs_per_gpu)
    seed_everything(0, params.runtime.deterministic)
    data = load_data(256, device, generator=None, workers=params.runtime.workers)
    amp = resolve_amp(params.runtime.amp, device)
    labels = data.test.labels.cpu()
    corrupted = load_corrupted(paths.CORRUPTED, data.meta)
    corrupted_batches = BatchIterator(
        corrupted.images.flatten(0, 2), corrupted.labels.repeat(corrupted.images.shape[0] * corrupted.images.shape[1]),
        batch_size=CORRUPTED_BATCH, mean=data.meta["mean"], std=data.meta["std"], train=False, generator=None,
        device=device) if corrupted.enabled else None
    jobs: list[tuple[str, str, object, dict]] = []  # kind, architecture, model file, record fields
    for arch in params.teachers:
        jobs.append(("teacher", arch, paths.teacher_dir(arch) / "model.pt", {}))
        jobs.append(("pruned_teacher", arch, paths.pruned_dir(arch) / "model.pt",
                     {"prune_method": params.prune.method, "prune_ratio": params.prune.ratio}))
    for run_ in student_runs(params):
        jobs.append(("student", run_.student, run_.dir / "model.pt",
                     {key: getattr(run_, key) for key in ("pair", "teacher", "method", "augment", "seed")}))

    def score(job) -> tuple[dict, torch.Tensor, torch.Tensor | None]:
        kind, arch, path, _ = job
        model = load_model(path, arch_spec(arch, data.meta), device=device)
        clean: list[torch.Tensor] = []
        scores = evaluate(model, data.test, amp, noise_std=NOISE_STD, data_std=data.meta["std"], logits_out=clean)
        corr = predict(model, corrupted_batches, amp) if corrupted_batches is not None else None
        return {**scores, **complexity(model, data.input_shape)}, torch.cat(clean), corr

    # Models are scored independently, each by the kernels it would run alone, so on the CPU several
    # are scored at once, on threads (r2kd/workers.py); the records are assembled in order, each
    # model's logits dropped once its record is done (a student's corrupted-set logits can be
    # hundreds of MB), as when they are scored one by one.
    scored = map_in_order(score, jobs, cpu_workers(device, params.runtime.threads), "evaluate")
    records: list[dict] = []
    teacher_logits: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
    images = labels.numel() + (corrupted.images.shape[:3].numel() if corrupted.enabled else 0)  # K x S x N
    for (kind, arch, path, fields), (scores, logits, corr) in progress(
            zip(jobs, scored), len(jobs), f"evaluate: {len(jobs)} models x {images:,} images"):
        record = {"kind": kind, "path": str(path), "arch": arch, **fields, **scores,
                  "calibration": calibration_scores(logits, labels)}
        if corr is not None:
            record["corruption"] = corruption_scores(corr, corrupted, logits[corrupted.index], record["calibration"])
        if kind == "teacher":
            teacher_logits[arch] = logits, corr
        elif kind == "student":
            t_logits, t_corr = teacher_logits[fields["teacher"]]
            record["fidelity"] = fidelity(t_logits, logits, t_corr, corr, corrupted)
        records.append(record)
    if corrupted.enabled:
        add_mce(records, params)
    corruptions = {k: corrupted.meta[k] for k in ("families", "severities", "count", "seed", "limit_per_class")}
    write_json(paths.EVAL, {
        "dataset": data.meta["name"], "test_count": int(labels.numel()), "noise_std": NOISE_STD,
        "corruptions": {"enabled": corrupted.enabled, "names": corrupted.meta["corruptions"], **corruptions},
        "calibration_fit": CALIBRATION_FIT, "models": records, "params": params_record(params, "evaluate"),
    })


def calibration_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """ECE / NLL before and after temperature scaling, the temperature cross-fitted on two halves."""
    halves = [torch.arange(0, labels.numel(), 2), torch.arange(1, labels.numel(), 2)]
    temps = [fit_temperature(logits[h], labels[h]) for h in halves]
    scaled = logits.double().clone()
    scaled[halves[1]] /= temps[0]  # each half scored with the temperature fitted on the other
    scaled[halves[0]] /= temps[1]
    before, after = calibration(logits, labels), calibration(scaled, labels)
    return {"ece": before["ece"], "nll": before["nll"], "ece_scaled": after["ece"], "nll_scaled": after["nll"],
            "temperature": fit_temperature(logits, labels), "temperature_folds": temps}


def corruption_scores(logits: torch.Tensor, corrupted: CorruptedData, clean_subset: torch.Tensor,
                      cal: dict) -> dict:
    """Top-1 per corruption and severity, error per family, mean corruption error, calibration."""
    names, severities = corrupted.meta["corruptions"], corrupted.meta["severities"]
    per = logits.view(len(names), len(severities), corrupted.labels.numel(), -1)
    acc = {name: [top1(per[k, s], corrupted.labels) for s in range(len(severities))] for k, name in enumerate(names)}
    error = {name: [100.0 - a for a in values] for name, values in acc.items()}
    families = {fam: sum(sum(error[c]) / len(severities) for c in members) / len(members)
                for fam, members in corrupted.meta["families"].items()}
    all_labels = corrupted.labels.repeat(len(names) * len(severities))
    before = calibration(logits, all_labels)
    after = calibration(logits, all_labels, temperature=cal["temperature"])
    return {
        "clean_top1": top1(clean_subset, corrupted.labels),  # the same images, uncorrupted
        "top1": acc,
        "family_error": families,
        "mean_error": sum(sum(e) for e in error.values()) / (len(names) * len(severities)),
        "top1_by_severity": [sum(acc[c][s] for c in names) / len(names) for s in range(len(severities))],
        "ece": before["ece"], "nll": before["nll"], "ece_scaled": after["ece"], "nll_scaled": after["nll"],
    }


def fidelity(teacher: torch.Tensor, student: torch.Tensor, teacher_corr: torch.Tensor | None,
             student_corr: torch.Tensor | None, corrupted: CorruptedData) -> dict:
    """How closely the student matches its teacher (Stanton et al., NeurIPS 2021)."""
    def match(t: torch.Tensor, s: torch.Tensor) -> dict:
        return {"agreement": agreement(t, s), "kl": kl_divergence(t, s)}

    out = {"clean": match(teacher, student)}
    if teacher_corr is not None and student_corr is not None:
        out["corrupted"] = match(teacher_corr, student_corr)
        k, s = len(corrupted.meta["corruptions"]), len(corrupted.meta["severities"])
        t, st = teacher_corr.view(k, s, -1, teacher_corr.shape[1]), student_corr.view(k, s, -1, student_corr.shape[1])
        out["corrupted_by_severity"] = [match(t[:, i].flatten(0, 1), st[:, i].flatten(0, 1)) for i in range(s)]
    return out


def mce(errors: dict[str, list[float]], baseline: dict[str, list[float]]) -> float | None:
    """mean over corruptions c of (Σ_s err_model(c, s) / Σ_s err_baseline(c, s)), as a ratio (1 = the
    baseline): :func:`relative_mce` with no clean error (x - 0 is x, so the same numbers)."""
    return relative_mce(errors, 0.0, baseline, 0.0)


def relative_mce(errors: dict[str, list[float]], clean_error: float, baseline: dict[str, list[float]],
                 baseline_clean_error: float) -> float | None:
    """Relative mCE (Hendrycks & Dietterich): mean over corruptions c of Σ_s (err(c, s) − err_clean) /
    Σ_s (err_base(c, s) − err_base_clean), the clean errors on the same (uncorrupted) images. A
    corruption that does not hurt the baseline (denominator <= 0) has no ratio and is left out."""
    ratios = [sum(e - clean_error for e in errors[c]) / denominator for c in errors
              if (denominator := sum(e - baseline_clean_error for e in baseline[c])) > 0]
    return sum(ratios) / len(ratios) if ratios else None


def _clean_error(record: dict) -> float:
    return 100.0 - record["corruption"]["clean_top1"]


def _errors(record: dict) -> dict[str, list[float]]:
    return {c: [100.0 - a for a in v] for c, v in record["corruption"]["top1"].items()}


def add_mce(records: list[dict], params: Params) -> None:
    """mCE of every model, normalised by the `ce` students of the same pair (and augment, for a
    student; the first augment for teachers), their errors averaged over seeds."""
    ce_runs: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for rec in records:
        if rec["kind"] == "student" and rec["method"] == "ce":
            ce_runs[(rec["pair"], rec["augment"])].append(rec)
    baselines = {}  # (pair, augment): the ce students' errors per corruption and severity, and clean error
    for key, runs in ce_runs.items():
        errors = [_errors(r) for r in runs]
        baselines[key] = ({c: [sum(e[c][s] for e in errors) / len(errors) for s in range(len(errors[0][c]))]
                           for c in errors[0]}, sum(_clean_error(r) for r in runs) / len(runs))

    def scores(rec: dict, key: tuple[str, str]) -> tuple[float | None, float | None]:  # (mCE, relative mCE)
        base, base_clean = baselines[key]
        return mce(_errors(rec), base), relative_mce(_errors(rec), _clean_error(rec), base, base_clean)

    for rec in records:
        corr = rec["corruption"]
        if rec["kind"] == "student":
            key = (rec["pair"], rec["augment"])
            corr["mce"], corr["relative_mce"] = scores(rec, key) if key in baselines else (None, None)
            corr["mce_baseline"] = f"{rec['pair']}/ce-{rec['augment']}" if key in baselines else None
        else:
            by_pair = {key: scores(rec, (key, params.augments[0])) for key, pair in params.pairs.items()
                       if pair.teacher == rec["arch"] and (key, params.augments[0]) in baselines}
            corr["mce_by_pair"] = {key: m for key, (m, _) in by_pair.items()}
            corr["relative_mce_by_pair"] = {key: r for key, (_, r) in by_pair.items()}
