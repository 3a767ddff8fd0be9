# The pipeline for Snakemake: `snakemake --cores 2` runs the same DAG, the same commands and the same
# files as `dvc repro` (tests/test_dag.py fails if they differ). Rules live in workflow/rules/, one
# file per part of the DAG; every parameter comes from params.yaml (see workflow/rules/common.smk).
from snakemake.utils import min_version

min_version("8.0")


# Every rule runs in this environment under `--use-conda`; with `--use-singularity` too, inside this
# image (Snakemake builds the conda environment in it).
container: "docker://condaforge/miniforge3:24.9.2-0"


report: "workflow/report/workflow.rst"


# Snakemake's config is params.yaml; `--config section='{key: value}'` and `--configfile f.yaml`
# override it for one run, validated like it (docs/snakemake.md).
configfile: "params.yaml"


include: "workflow/rules/common.smk"


# The params file the jobs read (params.yaml, or the effective file of a run with overrides), also
# in jobs that run elsewhere (SLURM).
envvars:
    "R2KD_PARAMS",


# Names that become paths and arguments: the same character sets r2kd/config.py enforces.

wildcard_constraints:
    teacher="[A-Za-z0-9_]+",
    pair="[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*",
    method="[a-z0-9_]+",
    augment="[a-z0-9_]+",
    seed="0|[1-9][0-9]*",


# Whatever Snakemake makes enters DVC's records when the run ends, and DVC is held off meanwhile, so
# that no DVC command deletes a result it could not restore (r2kd/handoff.py).
onstart:
    snakemake_started()


onsuccess:
    snakemake_ended()


onerror:
    snakemake_ended()


# A failed job's error message ends with its log, locally as under SLURM (workflow/rules/console.smk).
include: "workflow/rules/console.smk"


include: "workflow/rules/teachers.smk"
include: "workflow/rules/students.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        ALL_TARGETS,
