# The pipeline for Snakemake: `snakemake --cores 2` runs the same DAG, the same commands and the same
# files as `dvc repro` (tests/test_dag.py fails if they differ). Rules live in workflow/rules/, one
# file per part of the DAG; every parameter comes from params.yaml (see workflow/rules/common.smk).
from snakemake.utils import min_version

min_version("8.0")


# Every rule runs in this environment under `--use-conda`; with `--use-singularity` too, inside this
# image (Snakemake builds the conda environment in it).
container: "docker://condaforge/miniforge3:24.9.2-0"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


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


def show_failed_logs():
    """`--show-failed-logs` always: a failed job's error message ends with its log (the stage's own
    output, with the cause at the bottom), locally as under workflow/profiles/slurm. Setting
    workflow.output_settings alone does nothing: Snakemake's log formatters copied the flag before
    it read this file, so they are told too (tests/test_cluster.py checks both executors)."""
    import snakemake.logging as smk_logging

    workflow.output_settings.show_failed_logs = True
    formatter = getattr(smk_logging, "DefaultFormatter", None)  # Snakemake >= 9
    for handler in getattr(smk_logging.logger, "handlers", []):
        if formatter is not None and isinstance(handler.formatter, formatter):
            handler.formatter.show_failed_logs = True
    if hasattr(smk_logging.logger, "show_failed_logs"):  # Snakemake 8's own logger object
        smk_logging.logger.show_failed_logs = True


show_failed_logs()


include: "workflow/rules/teachers.smk"
include: "workflow/rules/students.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        ALL_TARGETS,
