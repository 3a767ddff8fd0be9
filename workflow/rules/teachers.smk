# Data and teachers: prepare the dataset, train (or import) each teacher once, prune it once, and
# pin each pair's teacher file, and per method the pruned teacher its students run (or none).


rule prepare:
    input:
        code("prepare"),
        data=data_index(),
        params_stamp=rule_stamp("prepare"),
    output:
        PREPARED,
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
        params_stamp=rule_stamp("train_teacher"),
    output:
        model="runs/teachers/{teacher}/model.pt",
        provenance="runs/teachers/{teacher}/provenance.json",
        metrics="runs/teachers/{teacher}/metrics.json",
        log_csv="runs/teachers/{teacher}/log.csv",
    log:
        "logs/train_teacher/{teacher}.log",
    threads: threads("train_teacher")
    resources:
        **resources("train_teacher"),
    conda:
        ENV
    shell:
        "workflow/scripts/r2kd train-teacher {wildcards.teacher} > {log} 2>&1"


rule prune:
    input:
        PREPARED,
        "runs/teachers/{teacher}/model.pt",
        code("prune"),
        params_stamp=rule_stamp("prune"),
    output:
        model="runs/pruned/{teacher}/model.pt",
        provenance="runs/pruned/{teacher}/provenance.json",
        metrics="runs/pruned/{teacher}/prune.json",
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
        teacher=pair_teacher,
        code=code("pair"),
        params_stamp=rule_stamp("pair"),
    output:
        "runs/pairs/{pair}.json",
    log:
        "logs/pair/{pair}.log",
    threads: 1
    resources:
        **resources("pair"),
    conda:
        ENV
    shell:
        "workflow/scripts/r2kd pair {wildcards.pair} > {log} 2>&1"


rule pair_pruned:
    input:
        pruned_teacher,
        code=code("pair_pruned"),
        params_stamp=rule_stamp("pair_pruned"),
    output:
        # DVC's one output, the directory runs/pairs/{pair}, as the files in it: a student's input
        [f"runs/pairs/{{pair}}/{method}.json" for method in METHOD_SPECS],
        "runs/pairs/{pair}/record.json",
    log:
        "logs/pair_pruned/{pair}.log",
    threads: 1
    resources:
        **resources("pair_pruned"),
    conda:
        ENV
    shell:
        "workflow/scripts/r2kd pair-pruned {wildcards.pair} > {log} 2>&1"
