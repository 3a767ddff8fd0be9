# Snakemake entry point: `snakemake --cores 2` runs the same DAG as `dvc repro`.
# The rules are generated from dvc.yaml (the single source of truth) in workflow/rules/stages.smk.
include: "workflow/rules/stages.smk"


rule all:
    default_target: True
    input:
        ALL_OUTPUTS,
