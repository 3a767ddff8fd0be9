# Score every final model, then aggregate everything into reports/ (tables, plots, metrics).
TEACHER_FILES = [f"runs/{kind}/{arch}/{name}" for arch in PARAMS.teachers
                 for kind, names in (("teachers", ("model.pt", "provenance.json", "metrics.json", "log.csv")),
                                     ("pruned", ("model.pt", "provenance.json", "prune.json")))
                 for name in names]
STUDENT_FILES = [f"{run.dir}/{name}" for run in RUNS for name in ("model.pt", "provenance.json", "metrics.json", "log.csv")]
REPORTS = ["reports/summary.json", "reports/summary.md", "reports/summary.csv", "reports/curves.csv",
           "reports/accuracy_per_epoch.png", "reports/accuracy_per_method.png", "reports/metrics.json"]
ALL_TARGETS = REPORTS


rule evaluate:
    input:
        "data/prepared/test.pt",
        "data/prepared/meta.json",
        TEACHER_FILES,
        STUDENT_FILES,
        code("evaluate"),
        params_stamp=rule_stamp("evaluate"),
    output:
        "reports/eval.json",
    params:
        values=rule_params("evaluate"),
    log:
        "logs/evaluate.log",
    threads: THREADS
    resources:
        **resources("evaluate"),
    conda:
        ENV
    shell:
        "workflow/scripts/r2kd evaluate > {log} 2>&1"


rule report:
    input:
        "reports/eval.json",
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
        "reports/metrics.json",
    params:
        values=rule_params("report"),
    log:
        "logs/report.log",
    threads: 1
    resources:
        **resources("report"),
    conda:
        ENV
    shell:
        "workflow/scripts/r2kd report > {log} 2>&1"
