# Score every final model, then aggregate everything into reports/ (tables, plots, metrics).
TEACHER_FILES = [f"runs/{kind}/{arch}/{name}" for arch in PARAMS.teachers
                 for kind, names in (("teachers", ("model.pt", "provenance.json", "metrics.json", "log.csv")),
                                     ("pruned", ("model.pt", "provenance.json", "prune.json")))
                 for name in names]
STUDENT_FILES = [f"{run.dir}/{name}" for run in RUNS if not run.in_cohort
                 for name in ("model.pt", "provenance.json", "metrics.json", "log.csv")]
STUDENT_FILES += sorted({str(run.dir.parent) for run in RUNS if run.in_cohort})  # a cohort's one output
REPORTS = ["reports/summary.json", "reports/summary.md", "reports/summary.csv", "reports/curves.csv",
           "reports/accuracy_per_epoch.png", "reports/accuracy_per_method.png", "reports/accuracy_vs_latency.png",
           "reports/accuracy_per_severity.png", "reports/metrics.json"]
ALL_TARGETS = REPORTS


rule corrupt:
    input:
        "data/prepared/test.pt",
        "data/prepared/meta.json",
        code("corrupt"),
        params_stamp=rule_stamp("corrupt"),
    output:
        "data/corrupted/test_c.pt",
        "data/corrupted/meta.json",
    log:
        "logs/corrupt.log",
    threads: THREADS
    resources:
        **resources("corrupt"),
    conda:
        ENV
    shell:
        "workflow/scripts/r2kd corrupt > {log} 2>&1"


rule evaluate:
    input:
        "data/prepared/test.pt",
        "data/prepared/meta.json",
        "data/corrupted/test_c.pt",
        "data/corrupted/meta.json",
        TEACHER_FILES,
        STUDENT_FILES,
        code("evaluate"),
        params_stamp=rule_stamp("evaluate"),
    output:
        "reports/eval.json",
    log:
        "logs/evaluate.log",
    threads: THREADS
    resources:
        **resources("evaluate"),
    conda:
        ENV
    shell:
        "workflow/scripts/r2kd evaluate > {log} 2>&1"


rule export:
    input:
        "data/prepared/test.pt",
        "data/prepared/meta.json",
        TEACHER_FILES,
        STUDENT_FILES,
        code("export"),
        params_stamp=rule_stamp("export"),
    output:
        # ONNX files mirroring runs/ and export.json (deterministic); timings go to .r2kd/timing/
        directory("runs/export"),
    log:
        "logs/export.log",
    threads: THREADS
    resources:
        **resources("export"),
    conda:
        ENV
    shell:
        "workflow/scripts/r2kd export > {log} 2>&1"


rule report:
    input:
        "reports/eval.json",
        "runs/export",
        TEACHER_FILES,
        STUDENT_FILES,
        code("report"),
        params_stamp=rule_stamp("report"),
    output:
        "reports/summary.json",
        "reports/summary.md",
        report("reports/summary.csv", caption="../report/summary.rst", category="Results"),
        "reports/curves.csv",
        report("reports/accuracy_per_epoch.png", caption="../report/figure.rst", category="Results"),
        report("reports/accuracy_per_method.png", caption="../report/figure.rst", category="Results"),
        report("reports/accuracy_vs_latency.png", caption="../report/latency.rst", category="Robustness and deployment"),
        report("reports/accuracy_per_severity.png", caption="../report/severity.rst", category="Robustness and deployment"),
        "reports/metrics.json",
    log:
        "logs/report.log",
    threads: 1
    resources:
        **resources("report"),
    conda:
        ENV
    shell:
        "workflow/scripts/r2kd report > {log} 2>&1"
