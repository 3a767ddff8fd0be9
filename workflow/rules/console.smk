# What Snakemake prints: a failed job's error message ends with the job's log.


def show_failed_logs():
    """`--show-failed-logs` always: a failed job's error message ends with its log (the stage's own
    output, with the cause at the bottom), locally as under workflow/profiles/slurm. Setting
    workflow.output_settings alone does nothing in Snakemake 9: its log formatters copied the flag
    before it read the Snakefile, so they are told too (tests/test_cluster.py checks both executors)."""
    import snakemake.logging as smk_logging

    workflow.output_settings.show_failed_logs = True
    formatter = getattr(smk_logging, "DefaultFormatter", None)  # Snakemake >= 9
    for handler in getattr(smk_logging.logger, "handlers", []):
        if formatter is not None and isinstance(handler.formatter, formatter):
            handler.formatter.show_failed_logs = True
    if hasattr(smk_logging.logger, "show_failed_logs"):  # Snakemake 8's own logger object
        smk_logging.logger.show_failed_logs = True


show_failed_logs()
