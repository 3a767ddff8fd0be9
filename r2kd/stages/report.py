"""Stage `report`: aggregate every run into reports/summary.{json,md}, plots and a compact metrics file.

Accuracy is reported honestly: the best epoch's test top-1 (the paper's convention) AND the last
epoch's, each as mean ± sample std over seeds, with n; every table says which number it shows.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from r2kd import paths
from r2kd.config import Params
from r2kd.files import read_json, write_json, write_text, atomic_path
from r2kd.recorded import params_record
from r2kd.runs import student_runs
from r2kd.stages.csvlog import read_log

# Published CIFAR-100 top-1 (%) of the baselines, from mdistiller (METHOD.md §8), shown beside ours.
PUBLISHED_TOP1: dict[tuple[str, str, str, str], float] = {
    # (dataset, teacher, student, method): top-1
    ("cifar100", "resnet32x4", "resnet8x4", "kd"): 73.33,
    ("cifar100", "resnet32x4", "resnet8x4", "dkd"): 76.32,
    ("cifar100", "vgg13", "vgg8", "kd"): 72.98,
    ("cifar100", "vgg13", "vgg8", "dkd"): 74.68,
    ("cifar100", "resnet56", "resnet20", "kd"): 70.66,
    ("cifar100", "resnet56", "resnet20", "dkd"): 71.97,
    ("cifar100", "wrn_40_2", "wrn_16_2", "kd"): 74.92,
    ("cifar100", "wrn_40_2", "wrn_16_2", "dkd"): 76.23,
}
# The setting those numbers were measured in (mdistiller's CIFAR-100 configs): a row shows the published
# number only when its run used it, so a different β or a shorter schedule is never compared with it.
PUBLISHED_RECIPE = {"epochs": 240, "batch_size": 64, "lr": 0.05, "milestones": [150, 180, 210]}
PUBLISHED_HPARAMS = {
    "kd": {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9, "aug_view": "none"},
    "dkd": {"temperature": 4.0, "alpha": 1.0, "warmup": 20, "ce_weight": 1.0, "aug_view": "none"},
}
PUBLISHED_DKD_BETA = {("resnet32x4", "resnet8x4"): 8.0, ("resnet56", "resnet20"): 2.0, ("wrn_40_2", "wrn_16_2"): 6.0,
                      ("vgg13", "vgg8"): 6.0}


def published_top1(params: Params, dataset: str, teacher: str, student: str, method: str, hparams: dict) -> float | None:
    """The published number for this run, or None when its setting differs from the published one."""
    number = PUBLISHED_TOP1.get((dataset, teacher, student, method))
    recipe = params.distill.model_dump()
    expected = {**PUBLISHED_HPARAMS.get(method, {}),
                **({"beta": PUBLISHED_DKD_BETA.get((teacher, student))} if method == "dkd" else {})}
    if number is None or any(recipe[k] != v for k, v in PUBLISHED_RECIPE.items()):
        return None
    return number if all(hparams.get(k) == v for k, v in expected.items()) else None


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        return math.nan, math.nan
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
            "params": metrics["params"], "macs": metrics["macs"], **robustness(ev),
        })
        logs[(run_.pair, run_.method, run_.augment)].append(
            [{**row, "seed": run_.seed} for row in read_log(run_.dir / "log.csv")])

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
            "pruned": {"method": params.prune.method, "ratio": params.prune.ratio, "top1": prune["top1_after"],
                       "params": prune["params"], "macs": prune["macs"], "ece": ev_p["ece"],
                       "nonzero_fraction": prune["nonzero_fraction_after"], **robustness(ev_p), **_agreement(prune)},
        })

    latency = read_latency(params)
    groups = aggregate(records)
    write_json(paths.REPORTS / "summary.json", {"dataset": dataset, "runs": records, "teachers": teachers, "groups": groups,
                                                "params": params_record(params, "report")})
    write_text(paths.REPORTS / "summary.md", markdown(dataset, groups, teachers))
    write_json(paths.REPORTS / "metrics.json", compact_metrics(groups, teachers))
    write_text(paths.REPORTS / "summary.csv", summary_csv(groups))
    write_text(paths.REPORTS / "curves.csv", curves_csv(logs))
    plot_epochs(paths.REPORTS / "accuracy_per_epoch.png", logs, teachers)
    plot_methods(paths.REPORTS / "accuracy_per_method.png", groups, teachers)
    plot_latency(paths.REPORTS / "accuracy_vs_latency.png", latency, scored)
    plot_severity(paths.REPORTS / "accuracy_per_severity.png", groups, teachers)


def robustness(ev: dict) -> dict:
    """The headline robustness numbers of one eval.json record (None where not measured)."""
    corr = ev.get("corruption") or {}
    mce = corr.get("mce")
    if mce is None and corr.get("mce_by_pair"):
        mce = statistics.fmean(corr["mce_by_pair"].values())
    return {
        "eval_top1": ev["top1"],
        "mce": mce,
        "corruption_top1": (100.0 - corr["mean_error"]) if corr else None,
        "top1_by_severity": corr.get("top1_by_severity"),
        "agreement": ev.get("fidelity", {}).get("clean", {}).get("agreement"),
        "agreement_corrupted": ev.get("fidelity", {}).get("corrupted", {}).get("agreement"),
        "ece_scaled": ev.get("calibration", {}).get("ece_scaled"),
    }


def read_latency(params: Params) -> dict:
    """runs/export/latency.json (wall-clock numbers, read by the report only), or {} without export."""
    if not params.export.onnx or not paths.LATENCY.is_file():
        return {}
    return read_json(paths.LATENCY)


def show() -> None:
    """Print the results of the last `report` run (what `make run` ends with)."""
    summary = read_json(paths.REPORTS / "summary.json")
    print_table(summary["dataset"], summary["groups"], summary["teachers"])


def aggregate(records: list[dict]) -> list[dict]:
    by_group: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        by_group[(rec["dataset"], rec["teacher"], rec["student"], rec["method"], rec["augment"])].append(rec)
    groups = []
    for (dataset, teacher, student, method, augment), recs in by_group.items():
        row = {"dataset": dataset, "pair": recs[0]["pair"], "teacher": teacher, "student": student,
               "method": method, "augment": augment, "aug_view": recs[0]["aug_view"], "n": len(recs),
               "seeds": [r["seed"] for r in recs], "params": recs[0]["params"], "macs": recs[0]["macs"]}
        for key in ("best_top1", "last_top1", "noisy_top1", "ece"):
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std([r[key] for r in recs])
        for key in ("eval_top1", "mce", "corruption_top1", "agreement", "agreement_corrupted", "ece_scaled"):
            values = [r[key] for r in recs if r.get(key) is not None]
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(values) if values else (None, None)
        by_sev = [r["top1_by_severity"] for r in recs if r.get("top1_by_severity")]
        row["top1_by_severity"] = [statistics.fmean(v) for v in zip(*by_sev)] if by_sev else None
        row["published_top1"] = recs[0].get("published_top1")
        groups.append(row)
    return groups


def summary_csv(groups: list[dict]) -> str:
    """The students table as CSV (Snakemake's report shows it as a table)."""
    lines = ["pair,method,augment,view,n,best_top1_mean,best_top1_std,last_top1_mean,last_top1_std"]
    for g in groups:
        lines.append(f"{g['pair']},{g['method']},{g['augment']},{g['aug_view']},{g['n']},{g['best_top1_mean']:.2f},"
                     f"{g['best_top1_std']:.2f},{g['last_top1_mean']:.2f},{g['last_top1_std']:.2f}")
    return "\n".join(lines) + "\n"


def curves_csv(logs: dict) -> str:
    """Long-format test top-1 per epoch, a `run` column per line: what `dvc plots show` draws."""
    lines = ["epoch,test_top1,run"]
    for (pair, method, augment), runs in sorted(logs.items()):
        for seed_log in runs:
            seed = int(seed_log[0].get("seed", -1)) if seed_log and "seed" in seed_log[0] else None
            label = f"{pair} {method}/{augment}" + (f" s{seed}" if seed is not None else "")
            lines += [f"{int(row['epoch'])},{row['test_top1']:.4f},{label}" for row in seed_log]
    return "\n".join(lines) + "\n"


def _agreement(prune: dict) -> dict:
    """Agreement / KL with the teacher from prune.json: in the BN mode distillation uses and in eval
    mode (None for a prune.json written before the prune stage measured them)."""
    distilled, evaluated = prune.get("as_distilled", {}), prune.get("eval_mode", {})
    return {
        "bn_mode": prune.get("bn_mode"), "round_to": prune.get("round_to"), "finetune_epochs": prune.get("finetune_epochs"),
        "top1_as_distilled": distilled.get("pruned_top1"),
        "agreement": distilled.get("agreement"), "kl_t1": distilled.get("kl_t1"), "kl_t4": distilled.get("kl_t4"),
        "agreement_eval": evaluated.get("agreement"), "kl_t4_eval": evaluated.get("kl_t4"),
    }


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _pruned_label(p: dict) -> str:
    extra = ""
    if p.get("round_to"):
        extra += f", round_to {p['round_to']}"
    if p.get("finetune_epochs"):
        extra += f", fine-tune {p['finetune_epochs']} ep"
    return f"{p['method']}, {p['ratio']}{extra}"


def compact_metrics(groups: list[dict], teachers: list[dict]) -> dict:
    """The one metrics file (`dvc exp show`, `dvc metrics diff`): accuracy first, short keys.

    Mean test top-1 over seeds per method (best and last epoch), then the teachers; DVC sorts keys,
    so the method columns come before `teacher`.
    """
    several_pairs = len({g["pair"] for g in groups}) > 1
    out: dict = {}
    for g in groups:
        name = f"{g['method']}-{g['augment']}"
        key = f"{g['pair']}/{name}" if several_pairs else name
        out[key] = {"best": round(g["best_top1_mean"], 2), "last": round(g["last_top1_mean"], 2)}
    out["teacher"] = {t["arch"]: {"top1": round(t["best_top1"], 2), "pruned": round(t["pruned"]["top1"], 2)}
                      for t in teachers}
    return out


def _pm(mean: float, std: float, fmt: str = ".2f") -> str:
    return f"{mean:{fmt}} ± {std:{fmt}}"


def _pmo(group: dict, key: str, fmt: str = ".2f") -> str:
    """mean ± std of ``key`` in a group, or — where it was not measured."""
    if group.get(f"{key}_mean") is None:
        return "—"
    return _pm(group[f"{key}_mean"], group[f"{key}_std"], fmt)


def _opt(value: float | None, fmt: str = ".2f") -> str:
    return "—" if value is None else f"{value:{fmt}}"


def markdown(dataset: str, groups: list[dict], teachers: list[dict]) -> str:
    lines = [
        f"# r2kd results — {dataset}", "",
        "Test top-1 (%) as mean ± sample std over seeds (n = number of seeds). *Best* is the best epoch's "
        "test top-1 (the paper's convention, selected on the test set); *last* is the final epoch's, the "
        "honest number. *Noisy* is last-epoch top-1 under Gaussian pixel noise (σ = 0.1); ECE is the "
        "last model's expected calibration error (15 bins). *Published* is mdistiller's CIFAR-100 number "
        "where the setting matches.", "",
        "## Teachers", "",
        "| teacher | best top-1 | last top-1 | params | MACs | pruned (method, ratio) | pruned top-1 (eval BN) | pruned params | "
        "pruned MACs | BN mode | agreement | KL T=1 | KL T=4 | agreement (eval BN) | KL T=4 (eval BN) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in teachers:
        p = t["pruned"]
        lines.append(f"| {t['arch']} | {t['best_top1']:.2f} | {t['last_top1']:.2f} | {t['params']:,} | {t['macs']:,} | "
                     f"{_pruned_label(p)} | {p['top1']:.2f} | {p['params']:,} | {p['macs']:,} | {p.get('bn_mode') or '—'} | "
                     f"{_num(p.get('agreement'), '.2f')} | {_num(p.get('kl_t1'), '.4f')} | {_num(p.get('kl_t4'), '.4f')} | "
                     f"{_num(p.get('agreement_eval'), '.2f')} | {_num(p.get('kl_t4_eval'), '.4f')} |")
    lines += ["", "*Agreement*: % of test images where the pruned teacher's top-1 class equals the teacher's; "
              "*KL*: mean KL(teacher ‖ pruned) of the softmax outputs at temperature T. Both are measured with "
              "the pruned teacher in the BatchNorm mode distillation uses (*BN mode*; train = batch statistics, "
              "shuffled test batches of 64) and in eval mode."]
    lines += ["", "## Students", "",
              "| pair | method | augment (view) | n | best top-1 | last top-1 | noisy top-1 | ECE | published | params | MACs |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in groups:
        pub = f"{g['published_top1']:.2f}" if g["published_top1"] is not None else "—"
        lines.append(
            f"| {g['pair']} | {g['method']} | {g['augment']} ({g['aug_view']}) | {g['n']} | "
            f"{_pm(g['best_top1_mean'], g['best_top1_std'])} | {_pm(g['last_top1_mean'], g['last_top1_std'])} | "
            f"{_pm(g['noisy_top1_mean'], g['noisy_top1_std'])} | {g['ece_mean']:.3f} | {pub} | {g['params']:,} | {g['macs']:,} |")
    lines += ["", "## Robustness", "",
              "Scored by `evaluate` on the final model (docs/robustness.md), mean ± sample std over seeds. "
              "*Clean* is test top-1; *corrupted* is top-1 averaged over the 15 CIFAR-10-C corruptions x 5 "
              "severities (a per-class-capped subset of the test split); *mCE* is the mean over corruptions of "
              "the summed error over severities relative to the pair's `ce` student (1.00 = as robust as it, "
              "lower is better); *agreement* is top-1 agreement with the teacher (clean / corrupted); ECE before "
              "→ after temperature scaling (cross-fitted on two halves of the test split).", "",
              "| pair | method | augment | n | clean top-1 | corrupted top-1 | mCE | agreement (clean) | agreement (corrupted) | ECE | ECE, T-scaled |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in teachers:
        for label, r in ((f"teacher {t['arch']}", t), (f"pruned {t['arch']}", t["pruned"])):
            lines.append(f"| — | {label} | — | 1 | {_opt(r.get('eval_top1'))} | {_opt(r.get('corruption_top1'))} | "
                         f"{_opt(r.get('mce'), '.3f')} | — | — | {_opt(r.get('ece'), '.3f')} | {_opt(r.get('ece_scaled'), '.3f')} |")
    for g in groups:
        lines.append(
            f"| {g['pair']} | {g['method']} | {g['augment']} | {g['n']} | {_pmo(g, 'eval_top1')} | "
            f"{_pmo(g, 'corruption_top1')} | {_pmo(g, 'mce', '.3f')} | {_pmo(g, 'agreement')} | "
            f"{_pmo(g, 'agreement_corrupted')} | {_pm(g['ece_mean'], g['ece_std'], '.3f')} | {_pmo(g, 'ece_scaled', '.3f')} |")
    lines += ["", "![test accuracy per epoch](accuracy_per_epoch.png)", "",
              "![accuracy per method](accuracy_per_method.png)", "",
              "![accuracy vs CPU latency](accuracy_vs_latency.png)", "",
              "![accuracy per corruption severity](accuracy_per_severity.png)", ""]
    return "\n".join(lines)


def print_table(dataset: str, groups: list[dict], teachers: list[dict]) -> None:
    console = Console(width=max(Console().width, 120))  # a table, not a wrapped mess, in logs and CI
    # The headline columns only, so both tables fit 120 columns; reports/summary.md has them all.
    teacher_table = Table(title=f"{dataset}: teachers and the pruned second teacher")
    for col in ("teacher", "best top-1", "last top-1", "pruned copy", "top-1", "agreement", "KL T=4", "params"):
        teacher_table.add_column(col, justify="left" if col in ("teacher", "pruned copy") else "right")
    for t in teachers:
        p = t["pruned"]
        top1 = p.get("top1_as_distilled") if p.get("top1_as_distilled") is not None else p["top1"]
        teacher_table.add_row(t["arch"], f"{t['best_top1']:.2f}", f"{t['last_top1']:.2f}", _pruned_label(p), f"{top1:.2f}",
                              _num(p.get("agreement"), ".2f"), _num(p.get("kl_t4"), ".4f"), f"{t['params']:,} -> {p['params']:,}")
    console.print(teacher_table)
    console.print("[dim]pruned copy scored in the BatchNorm mode distillation uses "
                  f"({teachers[0]['pruned'].get('bn_mode') or '—'}); agreement: top-1 agreement (%) with the teacher.[/]"
                  if teachers else "")
    table = Table(title=f"{dataset}: student test top-1 (%), mean ± std over seeds")
    for col in ("pair", "method (view)", "n", "best top-1", "last top-1", "mCE", "agree", "ECE"):
        table.add_column(col, justify="right" if col not in ("pair", "method (view)") else "left")
    for g in groups:
        view = g["aug_view"] if g["augment"] == "default" else f"{g['augment']}: {g['aug_view']}"
        table.add_row(g["pair"], f"{g['method']} ({view})", str(g["n"]),
                      _pm(g["best_top1_mean"], g["best_top1_std"]), _pm(g["last_top1_mean"], g["last_top1_std"]),
                      _pmo(g, "mce", ".2f"), _pmo(g, "agreement", ".1f"), f"{g['ece_mean']:.3f}")
    console.print(table)
    console.print("[dim]mCE: corruption error relative to the pair's ce student (lower is better); agree: "
                  "top-1 agreement (%) with the teacher on the clean test set.[/]")
    console.print("[dim]best = best epoch (selected on test, the paper's convention); last = final epoch. "
                  "Full report: reports/summary.md[/]")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_epochs(path: Path, logs: dict, teachers: list[dict]) -> None:
    plt = _pyplot()
    pairs = sorted({key[0] for key in logs})
    fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs), 4), squeeze=False)
    for ax, pair in zip(axes[0], pairs):
        for (p, method, augment), runs in sorted(logs.items()):
            if p != pair:
                continue
            epochs = [row["epoch"] for row in runs[0]]
            per_epoch = list(zip(*[[row["test_top1"] for row in log] for log in runs]))
            means = [statistics.fmean(v) for v in per_epoch]
            stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in per_epoch]
            line = ax.plot(epochs, means, label=f"{method} ({augment})")[0]
            ax.fill_between(epochs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                            color=line.get_color(), alpha=0.15)
        ax.set(title=f"{pair}: student test top-1 (mean ± std over seeds)", xlabel="epoch", ylabel="top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save_figure(fig, path)


def plot_methods(path: Path, groups: list[dict], teachers: list[dict]) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(groups) + 2), 4))
    labels = [f"{g['pair']}\n{g['method']} ({g['augment']})" for g in groups]
    xs = range(len(groups))
    ax.bar([x - 0.2 for x in xs], [g["best_top1_mean"] for g in groups], 0.4,
           yerr=[g["best_top1_std"] for g in groups], capsize=3, label="best epoch")
    ax.bar([x + 0.2 for x in xs], [g["last_top1_mean"] for g in groups], 0.4,
           yerr=[g["last_top1_std"] for g in groups], capsize=3, label="last epoch")
    for t in teachers:
        ax.axhline(t["best_top1"], linestyle="--", color="gray", linewidth=1)
        ax.text(len(groups) - 0.5, t["best_top1"], f"teacher {t['arch']}", va="bottom", ha="right", fontsize=8)
    ax.set_ylim(0, 100)  # bars start at zero: a truncated axis exaggerates small differences
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set(ylabel="test top-1 (%)", title="Student test top-1, mean ± std over seeds")
    ax.legend(fontsize=8)
    _save_figure(fig, path)


def plot_latency(path: Path, latency: dict, scored: dict) -> None:
    """Clean test top-1 against onnxruntime batch-1 p50 latency: every student (colour = method) and
    the teachers (black markers, also drawn as horizontal reference lines)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    entries = [m for m in latency.get("models", []) if m["path"] in scored]
    if not entries:
        ax.text(0.5, 0.5, "no latency measurements (export disabled or not run)", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        _save_figure(fig, path)
        return
    methods = sorted({m.get("method") for m in entries if m["kind"] == "student"})
    colours = {name: f"C{i}" for i, name in enumerate(methods)}
    for m in entries:
        top1, ms = scored[m["path"]]["top1"], m["latency_batch1"]["p50_ms"]
        if m["kind"] == "student":
            ax.scatter(ms, top1, color=colours[m["method"]], s=25, alpha=0.8,
                       label=m["method"] if m["seed"] == min(e["seed"] for e in entries if e.get("method") == m["method"]) else None)
        else:
            label = f"{'pruned ' if m['kind'] == 'pruned_teacher' else 'teacher '}{m['arch']}"
            marker = "s" if m["kind"] == "teacher" else "D"
            ax.scatter(ms, top1, color="black", marker=marker, s=40, label=label)
            ax.axhline(top1, color="gray", linestyle="--" if m["kind"] == "teacher" else ":", linewidth=1)
    ax.set_xscale("log")
    ax.set(xlabel="onnxruntime CPU latency, batch 1, p50 (ms, log scale)", ylabel="clean test top-1 (%)",
           title="Accuracy vs CPU latency (up and left is better); y axis from 0")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    _save_figure(fig, path)


def plot_severity(path: Path, groups: list[dict], teachers: list[dict]) -> None:
    """Top-1 averaged over the 15 corruptions at each severity (0 = clean), mean over seeds per
    method; teachers and pruned teachers as dashed / dotted reference lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for g in groups:
        if g.get("top1_by_severity"):
            ys = [g["eval_top1_mean"], *g["top1_by_severity"]]
            ax.plot(range(len(ys)), ys, marker="o", label=f"{g['pair']} {g['method']} ({g['augment']})")
            drawn = True
    for t in teachers:
        for r, style, label in ((t, "--", f"teacher {t['arch']}"), (t["pruned"], ":", f"pruned {t['arch']}")):
            if r.get("top1_by_severity"):
                ys = [r["eval_top1"], *r["top1_by_severity"]]
                ax.plot(range(len(ys)), ys, color="gray", linestyle=style, label=label)
    if not drawn:
        ax.text(0.5, 0.5, "no corruption scores (evaluate.corruptions: false)", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_ylim(0, 100)
    ax.set_xticks(range(6), ["clean", "1", "2", "3", "4", "5"])
    ax.set(xlabel="corruption severity", ylabel="top-1 (%), mean over 15 corruptions",
           title="Top-1 per corruption severity (mean over seeds); y axis from 0")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save_figure(fig, path)


def _save_figure(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    _pyplot().close(fig)
