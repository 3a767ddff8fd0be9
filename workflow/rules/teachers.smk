# Data and teachers: prepare the dataset, train (or import) each teacher once, prune it once, and
# pin each pair's teacher files.


rule prepare:
    input:
        code("prepare"),
    output:
        PREPARED,
    params:
        values=params_of("data"),
    log:
        "logs/prepare.log",
    threads: THREADS
    resources:
        **resources("prepare"),
    conda:
        ENV
    shell:
        "workflow/scripts/r2kd prepare > {log} 2>&1"


rule train_teacher:
    input:
        PREPARED,
        code("train_teacher"),
    output:
        model="runs/teachers/{teacher}/model.pt",
        provenance="runs/teachers/{teacher}/provenance.json",
        metrics="runs/teachers/{teacher}/metrics.json",
        log_csv="runs/teachers/{teacher}/log.csv",
    params:
        values=lambda w: params_of("data", f"teachers.{w.teacher}", "train_teacher", *RUNTIME_KEYS),
    log:
        "logs/train_teacher/{teacher}.log",
    threads: THREADS
    resources:
        **resources("train_teacher"),
    conda:
        ENV
    shell:
        "workflow/scripts/r2kd train-teacher {wildcards.teacher} > {log} 2>&1"


rule prune:
    input:
        "data/prepared/test.pt",
        "data/prepared/meta.json",
        "runs/teachers/{teacher}/model.pt",
        code("prune"),
    output:
        model="runs/pruned/{teacher}/model.pt",
        provenance="runs/pruned/{teacher}/provenance.json",
        metrics="runs/pruned/{teacher}/prune.json",
    params:
        values=params_of("data", "prune.method", "prune.ratio", "prune.importance_p", "train_teacher.seed",
                         *RUNTIME_KEYS),
    log:
        "logs/prune/{teacher}.log",
    threads: THREADS
    resources:
        **resources("prune"),
    conda:
        ENV
    shell:
        "workflow/scripts/r2kd prune {wildcards.teacher} > {log} 2>&1"


rule pair:
    input:
        teacher=lambda w: f"runs/teachers/{PARAMS.pairs[w.pair].teacher}/model.pt",
        pruned=lambda w: f"runs/pruned/{PARAMS.pairs[w.pair].teacher}/model.pt",
        code=code("pair"),
    output:
        "runs/pairs/{pair}.json",
    params:
        values=lambda w: params_of(f"pairs.{w.pair}.teacher", f"pairs.{w.pair}.student"),
    log:
        "logs/pair/{pair}.log",
    threads: 1
    resources:
        **resources("pair"),
    conda:
        ENV
    shell:
        "workflow/scripts/r2kd pair {wildcards.pair} > {log} 2>&1"
