"""`r2kd <stage>`: one subcommand per pipeline stage, plus `check` (validate params.yaml) and `stages`.

Arguments only select which expanded stage instance to run (a teacher, a run of the matrix); every
setting comes from params.yaml, which is validated before any compute.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import warnings
from typing import Callable

from rich.console import Console
from rich.markup import escape

from r2kd import paths
from r2kd.config import json_schema, load_params
from r2kd.errors import ConfigError, UserError
from r2kd.files import write_text
from r2kd.pipeline import STAGES

err = Console(stderr=True, soft_wrap=True)  # an error stays one line, whatever the terminal width


def _check(args: argparse.Namespace) -> None:
    from r2kd.runs import student_runs

    try:
        params = load_params(args.params)
    except UserError as exc:
        if os.environ.get("DVC_STAGE"):
            from r2kd.handoff import missing_results, remove_empty_folders

            remove_empty_folders()  # those DVC made for the outputs of stages an invalid value named
            if missing := missing_results():  # `dvc exp run` checks out dvc.lock before any stage: say what it removed
                exc = UserError(f"{exc}\n{len(missing)} result(s) recorded in dvc.lock are not on disk "
                                f"({missing[0]}, ...): fix params.yaml (`git checkout params.yaml` undoes a "
                                "`dvc exp run -S`), then `dvc checkout` restores them from DVC's cache")
        raise exc from None
    err.print(f"[green]{args.params} is valid[/]: {len(params.teachers)} teacher(s), "
              f"{len(student_runs(params))} student run(s)")
    if args.stamp:
        from r2kd.stagecode import STAGE_CODE, stamp_text

        # Constant content: a valid change of params.yaml must not make every later stage stale.
        write_text(paths.CHECKED, "params.yaml validated by `r2kd check`\n")
        # Content that changes only with a stage's own code: an edit reruns the stages that run it.
        for stage in STAGE_CODE:
            write_text(paths.code_stamp(stage), stamp_text(stage, methods=params.methods))


def _schema(args: argparse.Namespace) -> None:
    print(json.dumps(schema_document(json_schema()), indent=2, sort_keys=True))


def schema_document(schema: dict) -> dict:
    """The schema as a file: with its `$schema` dialect, which `snakemake.utils.validate` requires."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _show(args: argparse.Namespace) -> None:
    from r2kd.stages.report import show

    show()


def _preset(args: argparse.Namespace) -> None:
    """Validate r2kd/presets/NAME.yaml, then make it the params.yaml that DVC and Snakemake read."""
    from importlib.resources import as_file

    from r2kd import presets

    if (found := presets.find(args.name)) is None:
        raise ConfigError(f"no preset {args.name!r}; known presets: {presets.names()}")
    with as_file(found) as source:
        load_params(source)
        write_text(args.params, source.read_text())
    err.print(f"[green]{args.params} now holds preset {args.name}[/]. Next: `dvc exp run` (or `dvc repro`), "
              "or `snakemake --cores N` / `snakemake --workflow-profile workflow/profiles/slurm`.")


def _stages(args: argparse.Namespace) -> None:
    from r2kd.runs import stage_commands

    for name, cmd in stage_commands(load_params(args.params)):
        print(f"{name}\t{cmd}")


def _stage(module: str, *names: str) -> Callable[[argparse.Namespace], int | None]:
    def call(args: argparse.Namespace) -> int | None:
        from r2kd import handoff, launch
        from r2kd.lock import stage_lock

        params = load_params(args.params)  # validated before anything heavy happens
        values = [getattr(args, n) for n in names]
        name = STAGES[module].dvc_name(**dict(zip(names, values)))  # DVC's stage name
        nproc = params.runtime.nproc_per_node
        if launch.needs_launch(module, nproc):  # N processes through torchrun (r2kd/launch.py)
            with stage_lock(name):
                placement = launch.place(nproc, params.runtime.device, params.resources_for(module).jobs_per_gpu)
                status = launch.relaunch(nproc, sys.argv[1:], placement)
                if not status:
                    handoff.note_result(name, args.params)
                return status
        # In a torchrun world the launcher (or, under a user's own torchrun, rank 0) holds the lock.
        lock_here = not launch.in_world() or (launch.is_global_main() and not os.environ.get(launch.LOCK_HELD_ENV))
        with stage_lock(name) if lock_here else contextlib.nullcontext():
            if launch.in_world() and module in launch.DISTRIBUTED_STAGES:
                from r2kd.distributed import session

                with session(params.runtime.device):
                    importlib.import_module(f"r2kd.stages.{module}").run(params, *values)
            else:
                importlib.import_module(f"r2kd.stages.{module}").run(params, *values)
            if lock_here:
                handoff.note_result(name, args.params)
        return None

    return call


def _seed(text: str) -> int:
    # strict: "00" or "+1" would name another run's directory than the one params.yaml lists
    if not text.isdigit() or (len(text) > 1 and text.startswith("0")):
        raise argparse.ArgumentTypeError(f"seed must be a plain decimal integer, got {text!r}")
    return int(text)


ARG_HELP = {"teacher": "a key of `teachers` in params.yaml", "pair": "a key of `pairs` in params.yaml",
            "method": "one of `methods`", "augment": "one of `augments`",
            "seed": "one of `seeds` (distill) or `cohort_seeds` (distill-cohort)"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r2kd", description=__doc__.splitlines()[0])
    from r2kd.recorded import params_file

    # tests use a copy; Snakemake's jobs, run with --config overrides, the file $R2KD_PARAMS names
    parser.add_argument("--params", default=params_file(), help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="validate params.yaml and exit")
    p.add_argument("--stamp", action="store_true", help="also write runs/checked.txt (the pipeline's first stage)")
    p.set_defaults(func=_check)
    sub.add_parser("schema", help="print the params.yaml schema as JSON Schema").set_defaults(func=_schema)
    p = sub.add_parser("preset", help="replace params.yaml by a validated preset from r2kd/presets/")
    p.add_argument("name", help="e.g. cifar100, tiny_imagenet")
    p.set_defaults(func=_preset)
    sub.add_parser("stages", help="list the expanded DAG (from dvc.yaml)").set_defaults(func=_stages)
    for stage in STAGES.values():  # one subcommand per stage of the pipeline table (r2kd/pipeline.py)
        p = sub.add_parser(stage.command, help=stage.help)
        for arg in stage.args:
            p.add_argument(arg, help=ARG_HELP[arg], **({"type": _seed} if arg == "seed" else {}))
        p.set_defaults(func=_stage(stage.name, *stage.args))
    sub.add_parser("show", help="print the results table of reports/summary.json").set_defaults(func=_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        code = args.func(args)
    except UserError as exc:
        err.print("[bold red]error:[/] " + escape(str(exc)), highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]; rerun the same command to resume from the last completed epoch")
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
