"""Stage `report`: aggregate every run into reports/summary.{json,md}, plots and a compact metrics file.

Accuracy is reported honestly: the best epoch's test top-1 (the paper's convention) AND the last
epoch's, each as mean ± sample std over seeds, with n; every table says which number it shows.
"""

from __future__ import annotations

import math
import statistics
import zlib
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Column, Table

from r2kd import paths
from r2kd.config import Params, R2KDParams
from r2kd.files import read_json, write_json, write_text, atomic_path
from r2kd.recorded import params_record
from r2kd.runs import student_runs
from r2kd.stages.csvlog import read_log

# Published CIFAR-100 top-1 (%) of the baselines, from mdistiller (METHOD.md §8), shown beside ours; with the
# β of the pair's published DKD run.
PUBLISHED_TOP1 = {("resnet32x4", "resnet8x4"): ({"kd": 73.33, "dkd": 76.32}, 8.0),
                  ("vgg13", "vgg8"): ({"kd": 72.98, "dkd": 74.68}, 6.0),
                  ("resnet56", "resnet20"): ({"kd": 70.66, "dkd": 71.97}, 2.0),
                  ("wrn_40_2", "wrn_16_2"): ({"kd": 74.92, "dkd": 76.23}, 6.0)}
# The setting those numbers were measured in (mdistiller's CIFAR-100 configs): a row shows the published
# number only when its run used it, so a different β or a shorter schedule is never compared with it.
PUBLISHED_RECIPE = {"epochs": 240, "batch_size": 64, "lr": 0.05, "milestones": [150, 180, 210]}
PUBLISHED_HPARAMS = {
    "kd": {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9, "aug_view": "none"},
    "dkd": {"temperature": 4.0, "alpha": 1.0, "warmup": 20, "ce_weight": 1.0, "aug_view": "none"},
}


def published_top1(params: Params, dataset: str, teacher: str, student: str, method: str, hparams: dict) -> float | None:
    """The published number for this run, or None when its setting differs from the published one."""
    numbers, beta = PUBLISHED_TOP1.get((teacher, student), ({}, None))
    expected = {**PUBLISHED_HPARAMS.get(method, {}), **({"beta": beta} if method == "dkd" else {})}
    recipe = params.distill.model_dump()
    if dataset != "cifar100" or method not in numbers or any(recipe[k] != v for k, v in PUBLISHED_RECIPE.items()):
        return None
    return numbers[method] if all(hparams.get(k) == v for k, v in expected.items()) else None


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def run(params: Params) -> None:
    evaluation = read_json(paths.REPORTS / "eval.json")
    dataset = evaluation["dataset"]
    scored = {rec["path"]: rec for rec in evaluation["models"]}

    records, logs = [], defaultdict(list)
    for run_ in student_runs(params):
        metrics = read_json(run_.dir / "metrics.json")
        ev = scored[str(run_.dir / "model.pt")]
        provenance = read_json(run_.dir / "provenance.json")
        records.append({
            "dataset": dataset, "pair": run_.pair, "teacher": run_.teacher, "student": run_.student,
            "method": run_.method, "augment": run_.augment, "aug_view": provenance["aug_view"], "seed": run_.seed,
            "published_top1": published_top1(params, dataset, run_.teacher, run_.student, run_.method,
                                             provenance["method_hparams"]),
            "best_top1": metrics["best_top1"], "best_epoch": metrics["best_epoch"], "last_top1": metrics["last_top1"],
            "last_top5": metrics["last_top5"], "ece": ev["ece"], "noisy_top1": ev["noisy_top1"],
            "params": metrics["params"], "macs": metrics["macs"], "hparams": provenance["method_hparams"],
            **robustness(ev),
        })
        logs[(run_.pair, run_.method, run_.augment)].append(read_log(run_.dir / "log.csv"))

    teachers = []
    for arch in params.teachers:
        metrics = read_json(paths.teacher_dir(arch) / "metrics.json")
        prune = read_json(paths.pruned_dir(arch) / "prune.json")
        ev_t = scored[str(paths.teacher_dir(arch) / "model.pt")]
        ev_p = scored[str(paths.pruned_dir(arch) / "model.pt")]
        teachers.append({
            "dataset": dataset, "arch": arch, "best_top1": metrics["best_top1"], "last_top1": metrics["last_top1"],
            "params": metrics["params"], "macs": metrics["macs"], "ece": ev_t["ece"], "noisy_top1": ev_t["noisy_top1"],
            "top1": ev_t["top1"], **robustness(ev_t),
            "pruned": {"method": params.prune.method, "ratio": params.prune.ratio, **_pruned_top1(prune),
                       "params": prune["params"], "macs": prune["macs"], "ece": ev_p["ece"],
                       "nonzero_fraction": prune["nonzero_fraction_after"], **robustness(ev_p), **_agreement(prune)},
        })

    # the export stage's wall-clock numbers (outside every output), if it ran
    latency = read_json(paths.LATENCY) if params.export.onnx and paths.LATENCY.is_file() else {}
    groups = aggregate(records)
    ablation_rows = ablation(records)
    b = basis(evaluation)
    write_json(paths.REPORTS / "summary.json", {"dataset": dataset, "basis": b, "runs": records, "teachers": teachers,
                                                "groups": groups, "ablation": ablation_rows,
                                                "params": params_record(params, "report")})
    write_text(paths.REPORTS / "summary.md", markdown(dataset, groups, teachers, b, ablation_rows))
    write_json(paths.REPORTS / "metrics.json", compact_metrics(groups, teachers))
    write_text(paths.REPORTS / "summary.csv", summary_csv(groups))
    write_text(paths.REPORTS / "curves.csv", curves_csv(logs))
    save_figure(figure_epochs(logs, groups, b), paths.REPORTS / "accuracy_per_epoch.png")
    save_figure(figure_methods(groups, records, teachers, b), paths.REPORTS / "accuracy_per_method.png")
    save_figure(figure_latency(latency, scored, teachers, b), paths.REPORTS / "accuracy_vs_latency.png")
    save_figure(figure_severity(groups, teachers, b), paths.REPORTS / "accuracy_per_severity.png")


def robustness(ev: dict) -> dict:
    """The headline robustness numbers of one eval.json record (None where not measured)."""
    corr = ev.get("corruption") or {}
    mce, relative = (corr.get(k) if corr.get(k) is not None or not corr.get(f"{k}_by_pair")
                     else statistics.fmean(corr[f"{k}_by_pair"].values()) for k in ("mce", "relative_mce"))
    corrupted = (100.0 - corr["mean_error"]) if corr else None
    subset_clean = corr.get("clean_top1")
    return {
        "eval_top1": ev["top1"], "mce": mce, "relative_mce": relative,
        # clean top-1 on the corrupted subset's own images, uncorrupted: the base of the drop
        "subset_clean_top1": subset_clean, "corruption_top1": corrupted,
        "corruption_drop": (subset_clean - corrupted) if subset_clean is not None and corrupted is not None else None,
        "top1_by_severity": corr.get("top1_by_severity"), "ece_scaled": ev.get("calibration", {}).get("ece_scaled"),
        "agreement": ev.get("fidelity", {}).get("clean", {}).get("agreement"),
        "agreement_corrupted": ev.get("fidelity", {}).get("corrupted", {}).get("agreement"),
    }


def aggregate(records: list[dict]) -> list[dict]:
    by_group: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        # by pair id, not (teacher, student): two pairs of one teacher and student can differ in method_params
        by_group[(rec["pair"], rec["method"], rec["augment"])].append(rec)
    groups = []
    for recs in by_group.values():
        row = {**{k: recs[0][k] for k in ("dataset", "pair", "teacher", "student", "method", "augment", "aug_view",
                                          "params", "macs", "published_top1")},
               "n": len(recs), "seeds": [r["seed"] for r in recs]}
        for key in ("best_top1", "last_top1", "noisy_top1", "ece", "eval_top1", "mce", "relative_mce", "subset_clean_top1",
                    "corruption_top1", "corruption_drop", "agreement", "agreement_corrupted", "ece_scaled"):
            values = [r[key] for r in recs if r.get(key) is not None]
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(values) if values else (None, None)
        by_sev = [r["top1_by_severity"] for r in recs if r.get("top1_by_severity")]
        row["top1_by_severity"] = [statistics.fmean(v) for v in zip(*by_sev)] if by_sev else None
        row["top1_by_severity_std"] = [mean_std(list(v))[1] for v in zip(*by_sev)] if by_sev else None
        groups.append(row)
    return groups


def summary_csv(groups: list[dict]) -> str:
    """The students table as CSV (Snakemake's report shows it as a table)."""
    lines = ["pair,method,augment,view,n,best_top1_mean,best_top1_std,last_top1_mean,last_top1_std"]
    lines += [f"{g['pair']},{g['method']},{g['augment']},{g['aug_view']},{g['n']},{g['best_top1_mean']:.2f},"
              f"{g['best_top1_std']:.2f},{g['last_top1_mean']:.2f},{g['last_top1_std']:.2f}" for g in groups]
    return "\n".join(lines) + "\n"


def series_label(pair: str | None, method: str, augment: str | None, several_pairs: bool) -> str:
    return (f"{pair} " if several_pairs else "") + f"{method} ({augment})"


def curves_csv(logs: dict) -> str:
    """Test top-1 per epoch per (pair, method, augment): mean, min and max over seeds, with n. What
    workflow/plots/by_method.json draws (a mean line in a min-max band; docs/robustness.md#plots)."""
    several_pairs = len({key[0] for key in logs}) > 1
    lines = ["epoch,mean,min,max,n,method,series"]
    for (pair, method, augment), runs in sorted(logs.items()):
        label = series_label(pair, method, augment, several_pairs)
        for epoch, values in _per_epoch(runs):
            lines.append(f"{epoch},{statistics.fmean(values):.4f},{min(values):.4f},{max(values):.4f},"
                         f"{len(values)},{method},{label}")
    return "\n".join(lines) + "\n"


def _per_epoch(runs: list[list[dict]]) -> list[tuple[int, list[float]]]:
    """(epoch, that epoch's test top-1 in every seed's log), for the epochs every seed reached."""
    by_epoch: dict[int, list[float]] = defaultdict(list)
    for log in runs:
        for row in log:
            by_epoch[int(row["epoch"])].append(row["test_top1"])
    return [(e, values) for e, values in sorted(by_epoch.items()) if len(values) == len(runs)]


def _pruned_top1(prune: dict) -> dict:
    """The ONE pruned-teacher top-1 every output shows: measured in the BatchNorm mode distillation uses
    (prune.bn_mode; train = batch statistics), labelled with it. A prune.json from before the prune stage
    measured it has only the eval-mode figure, labelled eval."""
    distilled = (prune.get("as_distilled") or {}).get("pruned_top1")
    return {"top1": prune["top1_after"] if distilled is None else distilled, "top1_eval_bn": prune["top1_after"],
            "top1_bn_mode": "eval" if distilled is None else prune.get("bn_mode") or "train"}


def _agreement(prune: dict) -> dict:
    """Agreement / KL with the teacher from prune.json, in the BN mode distillation uses and in eval mode."""
    distilled, evaluated = prune.get("as_distilled", {}), prune.get("eval_mode", {})
    return {
        "bn_mode": prune.get("bn_mode"), "round_to": prune.get("round_to"), "finetune_epochs": prune.get("finetune_epochs"),
        "top1_as_distilled": distilled.get("pruned_top1"),
        "agreement": distilled.get("agreement"), "kl_t1": distilled.get("kl_t1"), "kl_t4": distilled.get("kl_t4"),
        "agreement_eval": evaluated.get("agreement"), "kl_t4_eval": evaluated.get("kl_t4"),
    }


def _pruned_label(p: dict) -> str:
    return (f"{p['method']}, {p['ratio']}" + (f", round_to {p['round_to']}" if p.get("round_to") else "")
            + (f", fine-tune {p['finetune_epochs']} ep" if p.get("finetune_epochs") else ""))


def compact_metrics(groups: list[dict], teachers: list[dict]) -> dict:
    """The one metrics file (`dvc exp show`, `dvc metrics diff`): mean test top-1 over seeds per method
    (best and last epoch), then the teachers; DVC sorts keys, so the method columns come before `teacher`."""
    several_pairs = len({g["pair"] for g in groups}) > 1
    out = {(f"{g['pair']}/" if several_pairs else "") + f"{g['method']}-{g['augment']}":
           {"best": round(g["best_top1_mean"], 2), "last": round(g["last_top1_mean"], 2)} for g in groups}
    out["teacher"] = {t["arch"]: {"top1": round(t["best_top1"], 2), "pruned": round(t["pruned"]["top1"], 2)}
                      for t in teachers}
    return out


def _header(*columns: str) -> list[str]:
    """A markdown table's header and separator rows."""
    return ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]


def _pmo(group: dict, key: str, fmt: str = ".2f") -> str:
    """mean ± std of ``key`` in a group, or — where it was not measured."""
    return "—" if group.get(f"{key}_mean") is None else f"{group[f'{key}_mean']:{fmt}} ± {group[f'{key}_std']:{fmt}}"


def _opt(value: float | None, fmt: str = ".2f") -> str:
    return "—" if value is None else f"{value:{fmt}}"


# --- what every table and plot says it measured ------------------------------------------------
def basis(evaluation: dict) -> dict:
    """The images each number is measured on, from reports/eval.json."""
    corr = evaluation.get("corruptions") or {}
    enabled = bool(corr.get("enabled"))
    return {"dataset": evaluation["dataset"], "test_count": evaluation.get("test_count"),
            "corrupted_count": corr.get("count") if enabled else None,
            "corrupted_limit": corr.get("limit_per_class") if enabled else None,
            "corruptions": len(corr.get("names") or []), "severities": len(corr.get("severities") or [])}


def test_basis(b: dict) -> str:
    n = b.get("test_count")
    return f"{b['dataset']} test split" + (f", {n:,} images" if n else "")


def corrupted_basis(b: dict) -> str:
    if not b.get("corrupted_count"):
        return "no corrupted set"
    limit = b.get("corrupted_limit")
    return (f"corrupted subset: {b['corrupted_count']:,} test images"
            + (f" (the first {limit} per class)" if limit else " (all)")
            + f" x {b['corruptions']} corruptions x {b['severities']} severities")


def seeds_label(ns) -> str:
    ns = sorted(set(ns))
    return "n = " + "/".join(str(n) for n in ns) + (" seed" if ns == [1] else " seeds")


# --- ablation: paired per-seed differences against full R2KD ------------------------------------
# Two-sided 95 % Student-t quantiles t_{0.975, df}; beyond 30 degrees of freedom 2.042 (df 30), conservative.
T95 = dict(enumerate((12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
                      2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
                      2.052, 2.048, 2.045, 2.042), start=1))  # df 1..30
NOISE_RULE = ("a difference exceeds the noise when the 95 % confidence interval of the mean paired difference "
              "excludes 0: |mean| > t(0.975, n − 1) · std / √n (paired t-test, two-sided, α = 0.05)")
ABLATION_METRICS = ("last_top1", "best_top1", "corruption_top1")


def _full_r2kd_hparams() -> dict:
    return R2KDParams().model_dump(mode="json")  # as provenance.json records a run's method_hparams


def variant_label(method: str, hparams: dict, full: dict) -> str:
    """What a run changes against full R2KD, in words."""
    view = hparams.get("aug_view", "none")
    if method != "r2kd":
        return f"{method.upper()} " + ("without a view" if view == "none" else f"with the {view} view")
    parts = []
    if view != full["aug_view"]:
        parts.append("without the view" if view == "none" else f"with the {view} view")
    weight = hparams.get("teacher_weight")
    if weight != full["teacher_weight"]:
        parts.append("without the pruned teacher (w = 1)" if weight == 1.0 else f"w = {weight}")
    parts += [f"{k} = {hparams[k]}" for k in sorted(hparams) if k not in ("aug_view", "teacher_weight")
              and hparams[k] != full.get(k)]
    return "R2KD " + ", ".join(parts) if parts else "R2KD (full)"


def paired(diffs: list[float]) -> dict:
    mean, std = mean_std(diffs)
    n = len(diffs)
    half = T95.get(n - 1, 2.042) * std / math.sqrt(n) if n > 1 else math.inf
    return {"diffs": diffs, "mean": mean, "std": std, "n": n, "ci95": half, "exceeds_noise": abs(mean) > half,
            "positive": sum(d > 0 for d in diffs), "negative": sum(d < 0 for d in diffs)}


def ablation(records: list[dict]) -> list[dict]:
    """Every group of runs beside full R2KD (default hyper-parameters, its own view) of the same teacher
    and student, as per-seed differences (variant − full R2KD, same seed) with mean ± std and the
    noise rule above. Empty where no full R2KD ran."""
    full = _full_r2kd_hparams()
    refs: dict[tuple, dict[int, dict]] = defaultdict(dict)
    ref_group: dict[tuple, tuple] = {}
    for rec in records:
        key, group = (rec["teacher"], rec["student"]), (rec["pair"], rec["augment"])
        if rec["method"] == "r2kd" and rec.get("hparams") == full and ref_group.setdefault(key, group) == group:
            refs[key][rec["seed"]] = rec
    by_group: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        by_group[(rec["pair"], rec["method"], rec["augment"])].append(rec)
    rows, seen = [], []  # seen: (what makes two groups the same runs, the first one's row)
    for (pair, method, augment), recs in by_group.items():
        key = (recs[0]["teacher"], recs[0]["student"])
        matched = [(r, refs[key][r["seed"]]) for r in recs if r["seed"] in refs.get(key, {})]
        if not matched or all(r["method"] == "r2kd" and r.get("hparams") == full for r in recs):
            continue
        same = (method, augment, recs[0].get("hparams"), [(r["seed"], r["last_top1"]) for r, _ in matched])
        twin = next((row for runs, row in seen if runs == same), None)
        if twin:  # the same runs under another pair id (e.g. kd in both pairs of presets/ablation.yaml)
            twin["also_pairs"].append(pair)
            continue
        ref_pair, ref_augment = ref_group[key]
        row = {"pair": pair, "method": method, "augment": augment,
               "variant": variant_label(method, recs[0].get("hparams") or {}, full),
               "reference": f"{ref_pair} r2kd ({ref_augment})", "seeds": [r["seed"] for r, _ in matched],
               "hparams": recs[0].get("hparams"), "also_pairs": []}
        for metric in ABLATION_METRICS:
            diffs = [r[metric] - f[metric] for r, f in matched if r.get(metric) is not None and f.get(metric) is not None]
            row[metric] = paired(diffs) if diffs else None
        rows.append(row)
        seen.append((same, row))
    return rows


def _diff_cell(d: dict | None) -> str:
    if d is None:
        return "—"
    mark = " **\\***" if d["exceeds_noise"] else ""
    return f"{d['mean']:+.2f} ± {d['std']:.2f} ({d['positive']}+/{d['negative']}−){mark}"


def _rule_here(rows: list[dict]) -> str:
    """What the rule asks at the n of these rows, e.g. 'n = 3: |mean| > 2.48 std'."""
    ns = sorted({len(r["seeds"]) for r in rows if len(r["seeds"]) > 1})
    return "; ".join(f"with n = {n}, t = {T95.get(n - 1, 2.042):.2f}: |mean| > {T95.get(n - 1, 2.042) / math.sqrt(n):.2f} std"
                     for n in ns) or "n = 1: no difference can exceed the noise"


def ablation_markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["", "## Ablation: what each part of R2KD buys", "",
             "Paired per-seed differences, variant − full R2KD (same seed, same teacher and student; "
             "percentage points of test top-1, mean ± sample std over the n paired seeds; (k+/m−): how many "
             f"seeds the variant is above / below). Rule: {NOISE_RULE}; {_rule_here(rows)}; **\\*** marks those. "
             "*Last* and *best* are on the full test split, *corrupted* on the corrupted subset (see Robustness).", "",
             *_header("variant", "pair", "method (augment)", "reference", "n", "Δ last top-1", "Δ best top-1",
                      "Δ corrupted top-1")]
    for r in rows:
        pair = r["pair"] + "".join(f" (= {p}: identical runs)" for p in r.get("also_pairs", []))
        lines.append(f"| {r['variant']} | {pair} | {r['method']} ({r['augment']}) | {r['reference']} | "
                     f"{len(r['seeds'])} | " + " | ".join(_diff_cell(r[m]) for m in ABLATION_METRICS) + " |")
    return lines


def markdown(dataset: str, groups: list[dict], teachers: list[dict], b: dict | None = None,
             ablation_rows: list[dict] | None = None) -> str:
    b = b or {"dataset": dataset}
    mode = teachers[0]["pruned"].get("top1_bn_mode", "eval") if teachers else "eval"
    lines = [
        f"# r2kd results — {dataset}", "",
        f"**Basis.** Clean accuracy: the {test_basis(b)}. Robustness: the {corrupted_basis(b)}; its clean "
        "column scores the same images uncorrupted, so the drop compares like with like. n = number of seeds.", "",
        "Test top-1 (%) as mean ± sample std over seeds (n = number of seeds). *Best* is the best epoch's "
        "test top-1 (the paper's convention, selected on the test set); *last* is the final epoch's, the "
        "honest number. *Noisy* is last-epoch top-1 under Gaussian pixel noise (σ = 0.1); ECE is the "
        "last model's expected calibration error (15 bins). *Published* is mdistiller's CIFAR-100 number "
        "where the setting matches.", "",
        f"## Teachers ({test_basis(b)})", "",
        *_header("teacher", "best top-1", "last top-1", "params", "MACs", "pruned (method, ratio)",
                 f"pruned top-1 (BN {mode})", "pruned params", "pruned MACs", "agreement", "KL T=1", "KL T=4",
                 "pruned top-1 (BN eval)", "agreement (eval BN)", "KL T=4 (eval BN)"),
    ]
    for t in teachers:
        p = t["pruned"]
        lines.append(f"| {t['arch']} | {t['best_top1']:.2f} | {t['last_top1']:.2f} | {t['params']:,} | {t['macs']:,} | "
                     f"{_pruned_label(p)} | {p['top1']:.2f} | {p['params']:,} | {p['macs']:,} | "
                     f"{_opt(p.get('agreement'), '.2f')} | {_opt(p.get('kl_t1'), '.4f')} | {_opt(p.get('kl_t4'), '.4f')} | "
                     f"{_opt(p.get('top1_eval_bn'), '.2f')} | {_opt(p.get('agreement_eval'), '.2f')} | "
                     f"{_opt(p.get('kl_t4_eval'), '.4f')} |")
    lines += ["", f"*Pruned top-1 (BN {mode})* is THE pruned-teacher figure (`r2kd show` and metrics.json show the same): "
              "the pruned teacher in the BatchNorm mode distillation uses (train = batch statistics, shuffled test "
              "batches of 64). *Agreement*: % of test images where the pruned teacher's top-1 class equals the "
              "teacher's; *KL*: mean KL(teacher ‖ pruned) of the softmax outputs at temperature T; the eval-BN "
              "columns measure the same in eval mode."]
    lines += ["", f"## Students ({test_basis(b)})", "",
              *_header("pair", "method", "augment (view)", "n", "best top-1", "last top-1", "noisy top-1", "ECE",
                       "published", "params", "MACs")]
    for g in groups:
        lines.append(
            f"| {g['pair']} | {g['method']} | {g['augment']} ({g['aug_view']}) | {g['n']} | "
            f"{_pmo(g, 'best_top1')} | {_pmo(g, 'last_top1')} | "
            f"{_pmo(g, 'noisy_top1')} | {g['ece_mean']:.3f} | {_opt(g['published_top1'])} | {g['params']:,} | {g['macs']:,} |")
    n_test, n_sub = (f", {n:,}" if n else "" for n in (b.get("test_count"), b.get("corrupted_count")))
    lines += ["", "## Robustness", "",
              f"Scored by `evaluate` on the final (last-epoch) model, every network in eval-mode BatchNorm "
              f"(docs/robustness.md), mean ± sample std over seeds. Basis: the {corrupted_basis(b)}. "
              "*Clean (subset)* is top-1 on those same images uncorrupted; *corrupted* is top-1 averaged over the "
              "corruptions and severities; *drop* = clean (subset) − corrupted, per run then averaged. *Clean (full "
              "test)* is on the whole test split, shown for reference only: compare corrupted with the subset column. "
              "*mCE* is the mean over corruptions of the summed error over severities relative to the pair's `ce` "
              "student on the same images (1.00 = as robust as it, lower is better); *rel. mCE* the same for the "
              "drop: Σ_s (err(c, s) − err_clean) over the `ce` student's, the clean errors on the subset's own "
              "images (Hendrycks & Dietterich's relative mCE); *agreement* is top-1 "
              "agreement with the teacher (clean / corrupted); ECE before → after temperature scaling "
              "(cross-fitted on two halves of the test split).", "",
              *_header("pair", "method", "augment", "n", f"clean top-1 (full test{n_test})",
                       f"clean top-1 (subset{n_sub})", "corrupted top-1", "drop", "mCE", "rel. mCE",
                       "agreement (clean)", "agreement (corrupted)", "ECE", "ECE, T-scaled")]
    for t in teachers:
        for label, r in ((f"teacher {t['arch']}", t), (f"pruned {t['arch']} (BN eval)", t["pruned"])):
            lines.append(f"| — | {label} | — | 1 | {_opt(r.get('eval_top1'))} | {_opt(r.get('subset_clean_top1'))} | "
                         f"{_opt(r.get('corruption_top1'))} | {_opt(r.get('corruption_drop'))} | "
                         f"{_opt(r.get('mce'), '.3f')} | {_opt(r.get('relative_mce'), '.3f')} | — | — | {_opt(r.get('ece'), '.3f')} | {_opt(r.get('ece_scaled'), '.3f')} |")
    for g in groups:
        lines.append(
            f"| {g['pair']} | {g['method']} | {g['augment']} | {g['n']} | {_pmo(g, 'eval_top1')} | "
            f"{_pmo(g, 'subset_clean_top1')} | {_pmo(g, 'corruption_top1')} | {_pmo(g, 'corruption_drop')} | "
            f"{_pmo(g, 'mce', '.3f')} | {_pmo(g, 'relative_mce', '.3f')} | {_pmo(g, 'agreement')} | "
            f"{_pmo(g, 'agreement_corrupted')} | {_pmo(g, 'ece', '.3f')} | {_pmo(g, 'ece_scaled', '.3f')} |")
    lines += ablation_markdown(ablation_rows or [])
    lines += ["", "![test accuracy per epoch](accuracy_per_epoch.png)", "",
              "![accuracy per method](accuracy_per_method.png)", "",
              "![accuracy vs CPU latency](accuracy_vs_latency.png)", "",
              "![accuracy per corruption severity](accuracy_per_severity.png)", ""]
    return "\n".join(lines)


def _rich_table(title: str, columns: tuple[str, ...], left: tuple[str, ...], rows: list[tuple]) -> Table:
    table = Table(*(Column(col, justify="left" if col in left else "right") for col in columns), title=title)
    for row in rows:
        table.add_row(*row)
    return table


def print_table(dataset: str, groups: list[dict], teachers: list[dict], b: dict | None = None,
                ablation_rows: list[dict] | None = None) -> None:
    console = Console(width=max(Console().width, 120))  # a table, not a wrapped mess, in logs and CI
    b = b or {"dataset": dataset}
    # The headline columns only, so both tables fit 120 columns; reports/summary.md has them all.
    console.print(_rich_table(
        f"{dataset}: teachers and the pruned second teacher ({test_basis(b)})",
        ("teacher", "best top-1", "last top-1", "pruned copy", "pruned top-1", "agreement", "KL T=4", "params"),
        ("teacher", "pruned copy"),
        [(t["arch"], f"{t['best_top1']:.2f}", f"{t['last_top1']:.2f}", _pruned_label(p),
          f"{p['top1']:.2f} (BN {p.get('top1_bn_mode', 'eval')})", _opt(p.get("agreement"), ".2f"),
          _opt(p.get("kl_t4"), ".4f"), f"{t['params']:,} -> {p['params']:,}") for t in teachers for p in [t["pruned"]]]))
    console.print("[dim]pruned top-1: the pruned copy in the BatchNorm mode distillation uses (as in reports/summary.md); "
                  "agreement: top-1 agreement (%) with the teacher.[/]" if teachers else "")
    console.print(_rich_table(
        f"{dataset}: student test top-1 (%), mean ± std over seeds ({test_basis(b)})",
        ("pair", "method (view)", "n", "best top-1", "last top-1", "mCE", "agree", "ECE"), ("pair", "method (view)"),
        [(g["pair"], f"{g['method']} ({g['aug_view'] if g['augment'] == 'default' else g['augment'] + ': ' + g['aug_view']})",
          str(g["n"]), _pmo(g, "best_top1"), _pmo(g, "last_top1"), _pmo(g, "mce", ".2f"), _pmo(g, "agreement", ".1f"),
          f"{g['ece_mean']:.3f}") for g in groups]))
    console.print(f"[dim]mCE: corruption error relative to the pair's ce student on the {corrupted_basis(b)} (lower "
                  "is better); agree: top-1 agreement (%) with the teacher on the clean test set.[/]")
    if ablation_rows:
        console.print(_rich_table(
            "ablation: variant − full R2KD, paired by seed (pp, mean ± std)",
            ("variant", "pair", "n", "Δ last top-1", "Δ best top-1", "Δ corrupted"), ("variant", "pair"),
            [(r["variant"], r["pair"], str(len(r["seeds"])),
              *[_diff_cell(r[m]).replace(" **\\***", " *") for m in ABLATION_METRICS]) for r in ablation_rows]))
        console.print("[dim]* the 95 % paired-t interval excludes 0 (reports/summary.md states the rule).[/]")
    console.print("[dim]best = best epoch (selected on test, the paper's convention); last = final epoch. "
                  "Full report: reports/summary.md[/]")


def show() -> None:
    """Print the results of the last `report` run (what `make run` ends with)."""
    summary = read_json(paths.REPORTS / "summary.json")
    print_table(summary["dataset"], summary["groups"], summary["teachers"], summary.get("basis"), summary.get("ablation"))


# --- figures: one palette, axes zoomed to the data, every figure names its basis and n (docs/robustness.md) ----
METHOD_COLOURS = {"ce": "#8c564b", "kd": "#1f77b4", "dist": "#2ca02c", "dkd": "#9467bd", "r2kd": "#d62728"}
EXTRA_COLOURS = ("#ff7f0e", "#17becf", "#bcbd22", "#e377c2", "#393b79", "#637939")
TEACHER_STYLE = {"color": "black", "linestyle": "--", "marker": "s", "linewidth": 2.0, "zorder": 3}
PRUNED_STYLE = {"color": "#7f7f7f", "linestyle": ":", "marker": "D", "linewidth": 1.6, "zorder": 4}
PAIR_MARKERS = ("o", "^", "v", "P", "X", "*")


def method_colour(method: str) -> str:
    """The colour of ``method`` in every figure (a method outside the table: a fixed hash of its name)."""
    return METHOD_COLOURS.get(method) or EXTRA_COLOURS[zlib.crc32(method.encode()) % len(EXTRA_COLOURS)]


def view_linestyle(aug_view: str | None) -> str:
    """Solid without an extra view, dashed with one."""
    return "-" if aug_view in (None, "none") else "--"


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _zoom(ax, values: list[float]) -> None:
    """The y axis around the data (a truncated axis, said so in the label), every marker inside."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if values:
        lo, hi = min(values), max(values)
        pad = max(0.5, 0.1 * (hi - lo))
        ax.set_ylim(max(lo - pad, 0.0), hi + pad)


def figure_epochs(logs: dict, groups: list[dict], b: dict):
    """Test top-1 per epoch: mean over seeds per (method, view), a band from min to max over seeds."""
    plt = _pyplot()
    pairs = sorted({key[0] for key in logs}) or ["—"]
    views = {(g["pair"], g["method"], g["augment"]): g["aug_view"] for g in groups}
    fig, axes = plt.subplots(1, len(pairs), figsize=(6.5 * len(pairs), 4.5), squeeze=False)
    for ax, pair in zip(axes[0], pairs):
        curves = [(key, runs) for key, runs in sorted(logs.items()) if key[0] == pair]
        for (p, method, augment), runs in curves:
            epochs, values = zip(*_per_epoch(runs)) if _per_epoch(runs) else ((), ())
            means = [statistics.fmean(v) for v in values]
            view = views.get((p, method, augment), augment)
            ax.plot(epochs, means, color=method_colour(method), linestyle=view_linestyle(view), marker="o",
                    markersize=3, label=f"{method} ({augment}: {view}), n={len(runs)}")
            ax.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], color=method_colour(method),
                            alpha=0.12, linewidth=0)
        ax.set(title=f"{pair}: student test top-1 per epoch\nmean over seeds, band = min-max "
                     f"({seeds_label([len(runs) for _, runs in curves] or [0])})",
               xlabel="epoch", ylabel=f"test top-1 (%), {test_basis(b)}")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_methods(groups: list[dict], records: list[dict], teachers: list[dict], b: dict):
    """Best- and last-epoch test top-1 per group, mean ± std and every seed; the teachers as reference lines."""
    plt = _pyplot()
    from matplotlib.lines import Line2D
    several_pairs = len({g["pair"] for g in groups}) > 1
    fig, ax = plt.subplots(figsize=(max(7, (1.35 if several_pairs else 1.1) * len(groups) + 3), 4.8))
    values: list[float] = []
    for x, g in enumerate(groups):
        colour = method_colour(g["method"])
        seeds = [r for r in records if (r["pair"], r["method"], r["augment"]) == (g["pair"], g["method"], g["augment"])]
        for offset, key, face in ((-0.17, "best_top1", colour), (0.17, "last_top1", "white")):
            mean, std = g[f"{key}_mean"], g[f"{key}_std"]
            ax.errorbar(x + offset, mean, yerr=std, fmt="o", color=colour, markerfacecolor=face, markersize=7,
                        capsize=4, linewidth=1.5, zorder=3)
            ys = [r[key] for r in seeds]
            step = min(0.05, 0.14 / max(len(ys) - 1, 1))  # the dots of one group stay within ±0.07 of it
            xs = [x + offset + step * (i - (len(ys) - 1) / 2) for i in range(len(ys))]
            ax.scatter(xs, ys, s=12, color=colour, alpha=0.55, zorder=2, linewidths=0)
            values += ys + [mean - std, mean + std]
    right = len(groups) - 0.5
    for t in teachers:
        p = t["pruned"]
        for value, style, text in ((t["last_top1"], TEACHER_STYLE, f"teacher {t['arch']} (last epoch)"),
                                   (p["top1"], PRUNED_STYLE, f"pruned {t['arch']} (BN {p.get('top1_bn_mode', 'eval')})")):
            ax.axhline(value, color=style["color"], linestyle=style["linestyle"], linewidth=style["linewidth"],
                       zorder=style["zorder"] - 2)
            ax.text(right, value, text, va="bottom" if style is TEACHER_STYLE else "top", ha="right", fontsize=7,
                    color=style["color"])
            values.append(value)
    _zoom(ax, values)
    labels = [(f"{g['pair']}\n".replace("-", "-\n", 1) if several_pairs else "")
              + f"{g['method']}\n{g['augment']}: {g['aug_view']}\nn={g['n']}"
              for g in groups]
    ax.set_xticks(list(range(len(groups))), labels, fontsize=7)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set(ylabel="test top-1 (%) — axis zoomed to the data",
           title=f"Student test top-1: mean ± std over seeds, dots = seeds ({seeds_label(g['n'] for g in groups)})\n"
                 f"{test_basis(b)}; filled = best epoch, hollow = last epoch")
    handles = [Line2D([], [], marker="o", color="gray", linestyle="", label="best epoch (mean ± std)"),
               Line2D([], [], marker="o", color="gray", markerfacecolor="white", linestyle="", label="last epoch (mean ± std)"),
               Line2D([], [], color="black", linestyle="--", label="teacher"),
               Line2D([], [], color=PRUNED_STYLE["color"], linestyle=":", label="pruned teacher")]
    ax.legend(handles=handles, fontsize=7, loc="best")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def figure_latency(latency: dict, scored: dict, teachers: list[dict], b: dict):
    """Clean test top-1 of the final models against onnxruntime batch-1 p50 latency."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    entries = [m for m in latency.get("models", []) if m["path"] in scored]
    if not entries:
        ax.text(0.5, 0.5, "no latency measurements (export disabled or not run)", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    pruned_top1 = {t["arch"]: (t["pruned"]["top1"], t["pruned"].get("top1_bn_mode", "eval")) for t in teachers}
    groups: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    values: list[float] = []
    for m in entries:
        top1, ms = scored[m["path"]]["top1"], m["latency_batch1"]["p50_ms"]
        if m["kind"] == "student":
            groups[(m.get("pair"), m["method"], m.get("augment"))].append((ms, top1))
            ax.scatter(ms, top1, color=method_colour(m["method"]), s=14, alpha=0.5, linewidths=0, zorder=2)
        else:
            style = TEACHER_STYLE if m["kind"] == "teacher" else PRUNED_STYLE
            label = f"teacher {m['arch']}"
            if m["kind"] != "teacher" and m["arch"] in pruned_top1:
                top1, mode = pruned_top1[m["arch"]]
                label = f"pruned {m['arch']} (BN {mode})"
            ax.scatter(ms, top1, color=style["color"], marker=style["marker"], s=50, label=label, zorder=style["zorder"] + 1)
        values.append(top1)
    several_pairs = len({k[0] for k in groups}) > 1
    for (pair, method, augment), points in sorted(groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        xs, ys = zip(*points)
        (mx, sx), (my, sy) = mean_std(list(xs)), mean_std(list(ys))
        ax.errorbar(mx, my, xerr=sx, yerr=sy, fmt="o", color=method_colour(method), markersize=7, capsize=3, zorder=3,
                    label=series_label(pair, method, augment, several_pairs) + f", n={len(points)}")
        values += [my - sy, my + sy]
    ax.set_xscale("log")
    _zoom(ax, values)
    ax.set(xlabel="onnxruntime CPU latency, batch 1, p50 (ms, log scale)",
           ylabel="clean test top-1 (%) — axis zoomed",
           title=f"Accuracy vs CPU latency (up and left is better), final models\n{test_basis(b)}; "
                 "error bars: mean ± std over seeds, dots: seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def figure_severity(groups: list[dict], teachers: list[dict], b: dict):
    """Top-1 averaged over the corruptions at each severity, 0 = the same images uncorrupted; mean ± std
    over seeds per method; the teacher and the pruned teacher (drawn above it) as references."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    pairs = sorted({g["pair"] for g in groups})
    values: list[float] = []
    drawn = [g for g in groups if g.get("top1_by_severity") and g.get("subset_clean_top1_mean") is not None]
    for g in drawn:
        ys = [g["subset_clean_top1_mean"], *g["top1_by_severity"]]
        stds = [g["subset_clean_top1_std"], *g["top1_by_severity_std"]]
        xs = list(range(len(ys)))
        colour = method_colour(g["method"])
        ax.plot(xs, ys, color=colour, linestyle=view_linestyle(g["aug_view"]),
                marker=PAIR_MARKERS[pairs.index(g["pair"]) % len(PAIR_MARKERS)], zorder=2,
                label=series_label(g["pair"], g["method"], g["augment"], len(pairs) > 1) + f", n={g['n']}")
        ax.fill_between(xs, [y - s for y, s in zip(ys, stds)], [y + s for y, s in zip(ys, stds)], color=colour,
                        alpha=0.06, linewidth=0)
        values += [y - s for y, s in zip(ys, stds)] + [y + s for y, s in zip(ys, stds)]
    for t in teachers:
        for r, style, label in ((t, TEACHER_STYLE, f"teacher {t['arch']}"), (t["pruned"], PRUNED_STYLE, f"pruned {t['arch']} (BN eval)")):
            if r.get("top1_by_severity") and r.get("subset_clean_top1") is not None:
                ys = [r["subset_clean_top1"], *r["top1_by_severity"]]
                ax.plot(range(len(ys)), ys, label=label, markersize=5, **style)
                values += ys
    if not drawn:
        ax.text(0.5, 0.5, "no corruption scores (evaluate.corruptions: false)", ha="center", va="center",
                transform=ax.transAxes)
    _zoom(ax, values)
    ax.set_xticks(range(6), ["clean\n(same images)", "1", "2", "3", "4", "5"])
    ax.set(xlabel="corruption severity", ylabel="top-1 (%), mean over corruptions — axis zoomed",
           title=f"Top-1 per corruption severity, final models, mean ± std over seeds\n{corrupted_basis(b)}")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    _pyplot().close(fig)
