# One job per student run: pair x method x augment x seed, as listed in params.yaml.


rule distill:
    input:
        PREPARED,
        pair="runs/pairs/{pair}.json",
        pin=method_pin,
        code=code("distill"),
        method_code=method_code,
        params_stamp=rule_stamp("distill"),
    output:
        model="runs/students/{pair}/{method}-{augment}/s{seed}/model.pt",
        provenance="runs/students/{pair}/{method}-{augment}/s{seed}/provenance.json",
        metrics="runs/students/{pair}/{method}-{augment}/s{seed}/metrics.json",
        log_csv="runs/students/{pair}/{method}-{augment}/s{seed}/log.csv",
    log:
        "logs/distill/{pair}-{method}-{augment}-{seed}.log",
    threads: threads("distill")
    resources:
        **resources("distill"),
    conda:
        ENV
    shell:
        "workflow/scripts/r2kd distill {wildcards.pair} {wildcards.method} {wildcards.augment} {wildcards.seed} > {log} 2>&1"
