"""The report's rules, on synthetic results (no pipeline): one colour per method in every figure, axes
zoomed to the data, every figure naming its basis and n, clean vs corrupted accuracy on the same
images, one pruned-teacher figure, the ablation's paired differences and noise rule."""

from __future__ import annotations

import math

import pytest
from matplotlib.colors import to_hex

from r2kd.stages import report
from r2kd.stages.report import (ablation, aggregate, curves_csv, figure_epochs, figure_latency, figure_methods,
                                figure_severity, markdown, method_colour, robustness)

BASIS = {"dataset": "digits", "test_count": 540, "corrupted_count": 200, "corrupted_limit": 20, "corruptions": 15,
         "severities": 5}
FULL = report._full_r2kd_hparams()


def _ev(top1: float, subset_clean: float, corrupted: float) -> dict:
    return {"top1": top1, "ece": 0.01, "noisy_top1": top1 - 1,
            "corruption": {"clean_top1": subset_clean, "mean_error": 100 - corrupted, "mce": 1.0,
                           "top1_by_severity": [corrupted + 4, corrupted + 2, corrupted, corrupted - 2, corrupted - 4]}}


def _records() -> list[dict]:
    out = []
    for method, augment, hparams, base in (("kd", "none", {"aug_view": "none", "temperature": 4.0}, 97.5),
                                           ("r2kd", "cutmix", FULL, 98.5),
                                           ("r2kd", "none", {**FULL, "aug_view": "none"}, 98.0)):
        for seed in (0, 1, 2):
            last = base + 0.1 * seed
            out.append({"dataset": "digits", "pair": "t-s", "teacher": "t", "student": "s", "method": method,
                        "augment": augment, "aug_view": hparams["aug_view"], "seed": seed, "published_top1": None,
                        "best_top1": last + 0.2, "best_epoch": 5, "last_top1": last, "last_top5": 100.0,
                        "ece": 0.01, "noisy_top1": last - 1, "params": 10, "macs": 20, "hparams": hparams,
                        **robustness(_ev(last, last - 1.0, last - 20.0))})
    return out


def _teachers() -> list[dict]:
    prune = {"top1_after": 98.9, "params": 9, "macs": 18, "nonzero_fraction_after": 0.9, "bn_mode": "train",
             "as_distilled": {"pruned_top1": 96.1, "agreement": 97.0}, "eval_mode": {"agreement": 99.0}}
    t = {"arch": "t", "best_top1": 99.3, "last_top1": 99.1, "params": 100, "macs": 200, "ece": 0.01,
         "noisy_top1": 98.0, **robustness(_ev(99.1, 98.5, 80.0))}
    t["pruned"] = {"method": "l1_unstructured", "ratio": 0.1, **report._pruned_top1(prune), "params": 9, "macs": 18,
                   "ece": 0.02, "nonzero_fraction": 0.9, **robustness(_ev(98.9, 98.4, 79.0)), **report._agreement(prune)}
    return [t]


def _logs(records: list[dict]) -> dict:
    logs: dict = {}
    for r in records:
        logs.setdefault((r["pair"], r["method"], r["augment"]), []).append(
            [{"epoch": e, "test_top1": r["last_top1"] - (6 - e) * 5.0, "seed": r["seed"]} for e in range(1, 7)])
    return logs


def _latency(records: list[dict]) -> tuple[dict, dict]:
    models, scored = [], {}
    for i, r in enumerate(records):
        path = f"runs/students/{r['method']}-{r['augment']}/s{r['seed']}/model.pt"
        models.append({"kind": "student", "path": path, "method": r["method"], "pair": r["pair"], "augment": r["augment"],
                       "seed": r["seed"], "arch": "s", "latency_batch1": {"p50_ms": 0.5 + 0.01 * i}})
        scored[path] = {"top1": r["last_top1"]}
    for kind, top1, ms in (("teacher", 99.1, 2.0), ("pruned_teacher", 98.9, 1.9)):
        models.append({"kind": kind, "path": kind, "arch": "t", "latency_batch1": {"p50_ms": ms}})
        scored[kind] = {"top1": top1}
    return {"models": models}, scored


@pytest.fixture
def results():
    records = _records()
    return records, aggregate(records), _teachers()


def _figures(records, groups, teachers):
    latency, scored = _latency(records)
    return {"epochs": figure_epochs(_logs(records), groups, BASIS),
            "methods": figure_methods(groups, records, teachers, BASIS),
            "latency": figure_latency(latency, scored, teachers, BASIS),
            "severity": figure_severity(groups, teachers, BASIS)}


def _artist_colours(ax) -> set[str]:
    colours = {to_hex(line.get_color()) for line in ax.get_lines()}
    for coll in ax.collections:
        colours |= {to_hex(c) for c in coll.get_facecolor()} | {to_hex(c) for c in coll.get_edgecolor()}
    return colours


def test_palette_is_one_colour_per_method_and_distinct():
    methods = ["ce", "kd", "dist", "dkd", "r2kd", "crd", "fitnet"]
    assert len({method_colour(m) for m in methods[:5]}) == 5
    assert method_colour("crd") == method_colour("crd") and method_colour("crd") not in [method_colour(m) for m in methods[:5]]
    assert to_hex("black") not in {to_hex(method_colour(m)) for m in methods}


def test_every_figure_draws_each_method_in_its_palette_colour(results):
    records, groups, teachers = results
    allowed = {to_hex(method_colour("kd")), to_hex(method_colour("r2kd")), to_hex("black"),
               to_hex(report.PRUNED_STYLE["color"]), to_hex("white")}
    for name, fig in _figures(records, groups, teachers).items():
        ax = fig.axes[0]
        colours = _artist_colours(ax)
        assert {to_hex(method_colour("kd")), to_hex(method_colour("r2kd"))} <= colours, name
        assert colours <= allowed, (name, colours - allowed)
        for line in ax.get_lines():  # a labelled series is drawn in its method's colour
            label = line.get_label()
            if label.startswith(("kd ", "r2kd ")):
                assert to_hex(line.get_color()) == to_hex(method_colour(label.split()[0])), (name, label)
        report._pyplot().close(fig)


def test_axes_are_zoomed_to_the_data_and_clip_no_marker(results):
    records, groups, teachers = results
    figs = _figures(records, groups, teachers)
    lo, hi = figs["methods"].axes[0].get_ylim()
    values = [r[k] for r in records for k in ("best_top1", "last_top1")] + [99.1, 96.1]
    assert 90 < lo <= min(values) and hi >= max(values)  # 97-99 % is not drawn from 0
    lo, hi = figs["latency"].axes[0].get_ylim()
    assert 90 < lo <= 96.1 and hi >= 99.1  # the teachers' markers are inside
    lo, hi = figs["severity"].axes[0].get_ylim()
    assert lo > 50 and hi >= 98.5
    for fig in figs.values():
        report._pyplot().close(fig)


def test_every_figure_names_its_basis_and_n(results):
    records, groups, teachers = results
    for name, fig in _figures(records, groups, teachers).items():
        ax = fig.axes[0]
        text = " ".join([ax.get_title(), ax.get_ylabel(), *(t.get_text() for t in ax.get_xticklabels()),
                         *(t.get_text() for t in (ax.get_legend().get_texts() if ax.get_legend() else []))])
        assert "n = 3" in text or "n=3" in text, name
        if name == "severity":
            assert "corrupted subset: 200 test images (the first 20 per class)" in text and "same images" in text
        else:
            assert "digits test split, 540 images" in text, name
        report._pyplot().close(fig)
    text = " ".join(t.get_text() for t in _figures(records, groups, teachers)["methods"].axes[0].texts)
    assert "pruned t (BN train)" in text


def test_clean_and_corrupted_accuracy_are_on_the_same_images(results):
    records, groups, teachers = results
    rec = robustness(_ev(97.0, 95.0, 75.0))
    assert rec["subset_clean_top1"] == 95.0 and rec["corruption_drop"] == pytest.approx(20.0)
    g = next(g for g in groups if g["method"] == "kd")
    fig = figure_severity(groups, teachers, BASIS)
    line = next(li for li in fig.axes[0].get_lines() if li.get_label().startswith("kd "))
    assert line.get_ydata()[0] == pytest.approx(g["subset_clean_top1_mean"])  # not the full test set's clean top-1
    assert g["subset_clean_top1_mean"] != pytest.approx(g["eval_top1_mean"])
    report._pyplot().close(fig)
    md = markdown("digits", groups, teachers, BASIS)
    assert "clean top-1 (full test, 540) | clean top-1 (subset, 200) | corrupted top-1 | drop |" in md
    assert "corrupted subset: 200 test images (the first 20 per class) x 15 corruptions x 5 severities" in md


def test_one_pruned_teacher_figure_labelled_with_its_bn_mode(results, capsys):
    records, groups, teachers = results
    assert teachers[0]["pruned"]["top1"] == 96.1 and teachers[0]["pruned"]["top1_bn_mode"] == "train"
    md = markdown("digits", groups, teachers, BASIS)
    assert "pruned top-1 (BN train)" in md and "| 96.10 |" in md
    report.print_table("digits", groups, teachers, BASIS)
    out = capsys.readouterr().out
    assert "96.10 (BN train)" in out and "98.90 (BN" not in out
    assert report.compact_metrics(groups, teachers)["teacher"]["t"]["pruned"] == 96.1
    old = report._pruned_top1({"top1_after": 98.9})  # a prune.json without the as-distilled figure
    assert old == {"top1": 98.9, "top1_bn_mode": "eval", "top1_eval_bn": 98.9}


def test_ablation_paired_differences_and_noise_rule(results):
    records, groups, teachers = results
    rows = {r["variant"]: r for r in ablation(records)}
    assert set(rows) == {"KD without a view", "R2KD without the view"}
    d = rows["R2KD without the view"]["last_top1"]
    assert d["diffs"] == pytest.approx([-0.5, -0.5, -0.5]) and d["mean"] == pytest.approx(-0.5)
    assert d["std"] == pytest.approx(0.0) and d["exceeds_noise"]  # the same drop on every seed
    noisy = report.paired([1.0, -0.5, 0.2])
    assert not noisy["exceeds_noise"] and noisy["ci95"] == pytest.approx(4.303 * noisy["std"] / math.sqrt(3))
    assert report.paired([1.0, 1.2, 0.9])["exceeds_noise"] and not report.paired([2.0])["exceeds_noise"]
    md = markdown("digits", groups, teachers, BASIS, ablation(records))
    assert "with n = 3, t = 4.30: |mean| > 2.48 std" in md
    assert "## Ablation" in md and "| R2KD without the view | t-s | r2kd (none) | t-s r2kd (cutmix) | 3 | -0.50 ± 0.00 (0+/3−) **\\*** |" in md


def test_ablation_labels_the_pruned_teacher_variant():
    assert report.variant_label("r2kd", {**FULL, "teacher_weight": 1.0}, FULL) == "R2KD without the pruned teacher (w = 1)"
    assert report.variant_label("kd", {"aug_view": "cutmix"}, FULL) == "KD with the cutmix view"


def test_curves_csv_is_per_method_mean_min_max_with_integer_epochs(results):
    records, _, _ = results
    lines = curves_csv(_logs(records)).splitlines()
    assert lines[0] == "epoch,mean,min,max,n,method,series"
    row = next(line for line in lines if line.endswith("kd,kd (none)") and line.startswith("6,"))
    assert row.split(",")[1:5] == ["97.6000", "97.5000", "97.7000", "3"]


def test_ticker_prints_plain_lines_when_not_a_terminal(capsys):
    from r2kd.files import progress

    assert list(progress(range(3), 3, "evaluate: 3 models")) == [0, 1, 2]
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "evaluate: 3 models: 0/3" and err[-1].startswith("evaluate: 3 models: 3/3")


def test_two_pairs_of_one_teacher_and_student_are_separate_groups(results):
    records, _, _ = results
    other = [{**r, "pair": "t-s-nopruned"} for r in records]
    groups = aggregate(records + other)
    assert len(groups) == 6 and all(g["n"] == 3 for g in groups)


def test_ablation_lists_identical_runs_of_another_pair_once(results):
    records, _, _ = results
    other = [{**r, "pair": "t-s-nopruned"} for r in records if r["method"] == "kd"]
    rows = ablation(records + other)
    kd = [r for r in rows if r["method"] == "kd"]
    assert len(kd) == 1 and kd[0]["also_pairs"] == ["t-s-nopruned"]


def test_relative_mce_uses_the_clean_error_on_the_same_images():
    from r2kd.stages.evaluate import mce, relative_mce

    base = {"fog": [20.0, 30.0], "snow": [10.0, 10.0]}
    model = {"fog": [15.0, 25.0], "snow": [10.0, 10.0]}
    # clean errors on the subset: model 5, baseline 10 -> fog (10 + 20) / (10 + 20) = 1; snow (5 + 5) / 0: left out
    assert relative_mce(model, 5.0, base, 10.0) == pytest.approx(1.0)
    assert mce(model, base) == pytest.approx(((15 + 25) / 50 + 1.0) / 2)
    rec = robustness({"top1": 90.0, "corruption": {"clean_top1": 95.0, "mean_error": 20.0, "relative_mce": 0.9}})
    assert rec["relative_mce"] == 0.9


def test_add_mce_scores_students_and_teachers_against_the_ce_students():
    import yaml

    from r2kd.config import parse_params
    from r2kd.stages.evaluate import add_mce

    from pathlib import Path

    params = parse_params(yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text()))
    pair = next(iter(params.pairs))

    def rec(kind, method, clean, errs):
        fields = {"pair": pair, "method": method, "augment": "default"} if kind == "student" else {}
        return {"kind": kind, "arch": "wrn_16_2", **fields,
                "corruption": {"clean_top1": clean, "top1": {"fog": [100 - e for e in errs]}}}

    records = [rec("student", "ce", 90.0, [20.0, 30.0]), rec("student", "ce", 90.0, [20.0, 30.0]),
               rec("student", "r2kd", 95.0, [10.0, 20.0]), rec("teacher", None, 99.0, [5.0, 9.0])]
    add_mce(records, params)
    assert records[0]["corruption"]["relative_mce"] == pytest.approx(1.0)
    assert records[2]["corruption"]["mce"] == pytest.approx(30 / 50)
    assert records[2]["corruption"]["relative_mce"] == pytest.approx((5 + 15) / (10 + 20))
    assert records[3]["corruption"]["relative_mce_by_pair"][pair] == pytest.approx((4 + 8) / 30)
