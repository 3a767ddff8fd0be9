# One job per student run: pair x method x augment x seed, as listed in params.yaml; the runs of a
# pair and a seed of `cohort_seeds` are one job, their cohort.
# Each rule's seeds: `seeds` or `cohort_seeds` (a pattern that matches nothing for an empty list).
SOLO_SEEDS = "|".join(map(str, PARAMS.seeds)) or "(?!)"
COHORT_SEEDS = "|".join(map(str, PARAMS.cohort_seeds)) or "(?!)"


rule distill:
    input:
        PREPARED,
        pair="runs/pairs/{pair}.json",
        pin=method_pin,
        code=code("distill"),
        method_code=method_code,
        params_stamp=rule_stamp("distill"),
    output:
        model="runs/students/{pair}/s{seed}/{method}-{augment}/model.pt",
        provenance="runs/students/{pair}/s{seed}/{method}-{augment}/provenance.json",
        metrics="runs/students/{pair}/s{seed}/{method}-{augment}/metrics.json",
        log_csv="runs/students/{pair}/s{seed}/{method}-{augment}/log.csv",
    wildcard_constraints:
        seed=SOLO_SEEDS,
    log:
        "logs/distill/{pair}-{method}-{augment}-{seed}.log",
    threads: threads("distill")
    resources:
        **resources("distill"),
    conda:
        ENV
    shell:
        "workflow/scripts/r2kd distill {wildcards.pair} {wildcards.method} {wildcards.augment} {wildcards.seed} > {log} 2>&1"


rule distill_cohort:
    input:
        PREPARED,
        pair="runs/pairs/{pair}.json",
        # DVC's dep runs/pairs/{pair} (pair_pruned's directory), as the files in it
        pins=[f"runs/pairs/{{pair}}/{method}.json" for method in METHOD_SPECS] + ["runs/pairs/{pair}/record.json"],
        code=code("distill_cohort"),
        params_stamp=rule_stamp("distill_cohort"),
    output:
        directory("runs/students/{pair}/s{seed}"),
    wildcard_constraints:
        seed=COHORT_SEEDS,
    log:
        "logs/distill_cohort/{pair}-{seed}.log",
    threads: threads("distill_cohort")
    resources:
        **resources("distill_cohort"),
    conda:
        ENV
    shell:
        "workflow/scripts/r2kd distill-cohort {wildcards.pair} {wildcards.seed} > {log} 2>&1"
