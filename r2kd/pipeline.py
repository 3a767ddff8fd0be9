"""The pipeline's stages, declared once: what each one runs, reads, writes and records.

The CLI, paths, records, code stamps, the expanded stage list, the launcher and the Snakemake rules'
helpers read this table; dvc.yaml and workflow/rules/ stay hand-written in each tool's own form, and
tests/test_dag.py holds both to it (docs/architecture.md). Templates use the stage's arguments by
name (``{teacher}``, ``{pair}``, ...). Torch-free: Snakemake's parse and `r2kd check` import it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r2kd import method_params

SCRIPT = "workflow/scripts/r2kd"  # every stage command runs through it (it finds the environment)

RUNTIME_KEYS = ("runtime.device", "runtime.amp", "runtime.threads", "runtime.deterministic")
LIST_KEYS = ("teachers", "pairs", "methods", "augments", "seeds", "cohort_seeds", "prune.method", "prune.ratio")

# What every stage command runs before its own code (tests/closure.py: CLI); directories stand for
# every .py file under them.
_CLI = ("workflow/scripts/r2kd", "r2kd/__init__.py", "r2kd/__main__.py", "r2kd/cli.py", "r2kd/config.py",
        "r2kd/method_params/__init__.py", "r2kd/pipeline.py", "r2kd/errors.py", "r2kd/files.py", "r2kd/paths.py",
        "r2kd/pickle_scan.py", "r2kd/stages/__init__.py", "r2kd/yamlfile.py")
_DATA = ("r2kd/data/__init__.py", "r2kd/data/index.py", "r2kd/data/loader.py", "r2kd/data/prepared.py",
         "r2kd/data/registry.py", "r2kd/data/stream.py", "r2kd/data/transforms.py")
_TRAIN = ("r2kd/distributed.py", "r2kd/evaluation.py", "r2kd/gpu_slots.py", "r2kd/fast/__init__.py",
          "r2kd/fast/graphs.py", "r2kd/modelfile.py", "r2kd/models", "r2kd/optim.py", "r2kd/runtime.py",
          "r2kd/stages/dataset.py", "r2kd/stages/record.py", "r2kd/train.py",
          "r2kd/recorded.py",  # r2kd.stages.record: which params file the stage read (R2KD_PARAMS)
          "r2kd/stagecode.py")  # r2kd.stages.record keys resume state on the stage's code


@dataclass(frozen=True)
class Method:
    """A distillation method as the pipeline sees it: its loss in r2kd/methods/<name>.py, its
    hyper-parameters and what its students depend on in r2kd/method_params/<name>.py."""

    name: str

    @property
    def uses_pruned_teacher(self) -> bool:
        """Its students depend on the pair's pruned teacher (r2kd/stages/pair_pruned.py)."""
        return bool(method_params.module(self.name).USES_PRUNED_TEACHER)

    @property
    def files(self) -> tuple[str, ...]:
        """Its own source files: part of its students' code, no other stage's."""
        return (f"r2kd/methods/{self.name}.py", f"r2kd/method_params/{self.name}.py")


# One per module of r2kd/method_params/ (found, not listed: adding a method edits no file that every
# stage runs, this one included).
METHODS: Mapping[str, Method] = {name: Method(name) for name in method_params.names()}


@dataclass(frozen=True)
class Stage:
    name: str  # dvc.yaml's stage, Snakemake's rule, the module r2kd.stages.<name>
    command: str  # the r2kd subcommand
    help: str
    args: tuple[str, ...] = ()  # its arguments in order: DVC's foreach/matrix keys, Snakemake's wildcards
    keys: tuple[str, ...] = ()  # the params.yaml keys it reads (dvc.yaml `params:`, the Snakemake params stamp)
    code: tuple[str, ...] = ()  # the source files it runs (every method's share, for distill)
    outputs: tuple[str, ...] = ()  # path templates (a trailing "/" marks a directory)
    record: str = ""  # the output that records the params it was made with (r2kd/recorded.py)
    distributed: bool = False  # runs as runtime.nproc_per_node processes through torchrun (r2kd/launch.py)
    per_method: bool = False  # its code also holds its method's own files (METHODS[...].files)
    all_methods: bool = False  # its code also holds the own files of every method params.yaml lists

    def fill(self, template: str, **args: Any) -> str:
        return template.format_map(defaultdict(str, {k: str(v) for k, v in args.items()}))

    def dvc_name(self, **args: Any) -> str:
        """DVC's name for one expanded stage (foreach/matrix: ``name@key``, keys joined by "-")."""
        return f"{self.name}@{'-'.join(str(args[a]) for a in self.args)}" if self.args else self.name

    def cmd(self, **args: Any) -> str:
        return " ".join([SCRIPT, self.command, *(str(args[a]) for a in self.args)])

    def params_keys(self, **args: Any) -> list[str]:
        return [self.fill(key, **args) for key in self.keys]

    def output_paths(self, **args: Any) -> list[str]:
        return [self.fill(out, **args) for out in self.outputs]

    def record_path(self, **args: Any) -> Path:
        return Path(self.fill(self.record, **args))


_PAIR_CODE = (*_CLI, "r2kd/gpu_slots.py", "r2kd/models/__init__.py", "r2kd/models/complexity.py",
              "r2kd/models/layers.py", "r2kd/models/mobilenetv1.py", "r2kd/models/mobilenetv2.py",
              "r2kd/models/registry.py", "r2kd/models/resnet.py", "r2kd/models/shufflenetv1.py",
              "r2kd/models/shufflenetv2.py", "r2kd/models/torchvision_zoo.py", "r2kd/models/vgg.py",
              "r2kd/models/wrn.py", "r2kd/recorded.py", "r2kd/runtime.py", "r2kd/stages/pair.py",
              "r2kd/stages/record.py", "r2kd/stagecode.py")
# A run's folder lies in its (pair, seed)'s, the output of that seed's cohort (distill_cohort)
_STUDENT = "runs/students/{pair}/s{seed}/{method}-{augment}/"
_DISTILL_KEYS = ("data", "distill", "pairs.{pair}", "prune.bn_mode", *RUNTIME_KEYS, "runtime.fast_path")
_DISTILL_CODE = (*_CLI, *_DATA, *_TRAIN, "r2kd/augment.py", "r2kd/methods/__init__.py", "r2kd/methods/_common.py",
                 "r2kd/methods/base.py", "r2kd/methods/objective.py", "r2kd/parallel.py", "r2kd/pruning/__init__.py",
                 "r2kd/pruning/bn.py", "r2kd/pruning/methods.py", "r2kd/runs.py", "r2kd/stages/csvlog.py",
                 "r2kd/stages/distill.py", "r2kd/stages/pair.py", "r2kd/syncbn.py")

STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("prepare", "prepare", "materialise the dataset under data/prepared",
          keys=("data",),
          code=(*_CLI, "r2kd/data/__init__.py", "r2kd/data/datasets", "r2kd/data/idx.py", "r2kd/data/index.py",
                "r2kd/data/prepared.py", "r2kd/data/registry.py", "r2kd/data/safe_pickle.py", "r2kd/data/sources.py",
                "r2kd/data/storage.py", "r2kd/data/transforms.py", "r2kd/data/write.py", "r2kd/data/write_stream.py",
                "r2kd/stages/prepare.py"),
          outputs=("data/prepared/train.pt", "data/prepared/test.pt", "data/prepared/meta.json"),
          record="data/prepared/meta.json"),
    Stage("train_teacher", "train-teacher", "train (or import) one teacher", args=("teacher",),
          keys=("data", "teachers.{teacher}", "train_teacher", *RUNTIME_KEYS, "runtime.fast_path",
                "runtime.nproc_per_node"),
          code=(*_CLI, *_DATA, *_TRAIN, "r2kd/parallel.py", "r2kd/pretrained.py", "r2kd/stages/csvlog.py",
                "r2kd/stages/train_teacher.py", "r2kd/syncbn.py"),
          outputs=tuple(f"runs/teachers/{{teacher}}/{f}"
                        for f in ("model.pt", "provenance.json", "metrics.json", "log.csv")),
          record="runs/teachers/{teacher}/provenance.json", distributed=True),
    Stage("prune", "prune", "prune one trained teacher", args=("teacher",),
          keys=("data", "prune", "train_teacher.seed", *RUNTIME_KEYS),
          code=(*_CLI, *_DATA, *_TRAIN, "r2kd/pruning", "r2kd/stages/prune.py"),
          outputs=("runs/pruned/{teacher}/model.pt", "runs/pruned/{teacher}/provenance.json",
                   "runs/pruned/{teacher}/prune.json"),
          record="runs/pruned/{teacher}/provenance.json"),
    # Every student of a pair depends on its teacher pin; a method's students depend on its pin in
    # runs/pairs/<pair>/ too, which names the pruned teacher only for a method that runs it
    # (Method.uses_pruned_teacher), so a new pruned teacher reruns those students and no other.
    Stage("pair", "pair", "pin the teacher file one pair's students use", args=("pair",),
          keys=("pairs.{pair}.teacher", "pairs.{pair}.student"),
          code=_PAIR_CODE, outputs=("runs/pairs/{pair}.json",), record="runs/pairs/{pair}.json"),
    Stage("pair_pruned", "pair-pruned", "pin, per method, the pruned teacher its students use (or none)",
          args=("pair",), keys=("pairs.{pair}.teacher",),
          code=(*_PAIR_CODE, "r2kd/stages/pair_pruned.py"), outputs=("runs/pairs/{pair}/",),
          record="runs/pairs/{pair}/record.json"),
    Stage("distill", "distill", "train one student run of the experiment matrix",
          args=("pair", "method", "augment", "seed"),
          keys=(*_DISTILL_KEYS[:2], "method_params.{method}", *_DISTILL_KEYS[2:], "runtime.nproc_per_node",
                "runtime.sync_frozen_bn"),
          code=_DISTILL_CODE,  # every method's share; each student adds its own method's files (Method.files)
          outputs=tuple(_STUDENT + f for f in ("model.pt", "provenance.json", "metrics.json", "log.csv")),
          record=_STUDENT + "provenance.json", distributed=True, per_method=True),
    # A cohort: every run of a pair and one of `cohort_seeds`, trained together in one process, each
    # batch's views and frozen forwards computed once for all (r2kd/fast/cohort.py); each run's folder
    # gets the same files as a run's own stage would write.
    Stage("distill_cohort", "distill-cohort", "train every run of one pair and cohort seed together",
          args=("pair", "seed"),
          keys=(*_DISTILL_KEYS[:2], "method_params", "methods", "augments", *_DISTILL_KEYS[2:]),
          code=(*_DISTILL_CODE, "r2kd/fast/cohort.py", "r2kd/stages/distill_cohort.py"),
          outputs=("runs/students/{pair}/s{seed}/",), record="runs/students/{pair}/s{seed}/cohort.json",
          all_methods=True),
    Stage("corrupt", "corrupt", "draw the corrupted test set (15 corruptions x 5 severities) once",
          keys=("evaluate.corruptions", "evaluate.corruption_limit", "evaluate.corruption_seed"),
          code=(*_CLI, "r2kd/corruptions.py", "r2kd/data/__init__.py", "r2kd/data/corrupted.py",
                "r2kd/data/prepared.py", "r2kd/data/registry.py", "r2kd/recorded.py", "r2kd/stages/corrupt.py",
                "r2kd/workers.py"),
          outputs=("data/corrupted/test_c.pt", "data/corrupted/meta.json"), record="data/corrupted/meta.json"),
    Stage("evaluate", "evaluate", "score every final model on the test set",
          keys=(*LIST_KEYS, "evaluate", "runtime.device", "runtime.amp", "runtime.threads"),
          code=(*_CLI, *_DATA, "r2kd/data/corrupted.py", "r2kd/distributed.py", "r2kd/evaluation.py",
                "r2kd/gpu_slots.py", "r2kd/modelfile.py", "r2kd/models", "r2kd/recorded.py", "r2kd/runs.py",
                "r2kd/runtime.py", "r2kd/stages/dataset.py", "r2kd/stages/evaluate.py", "r2kd/workers.py"),
          outputs=("reports/eval.json",), record="reports/eval.json"),
    Stage("export", "export", "export every model to ONNX, check it and time it with onnxruntime",
          keys=("export", *LIST_KEYS[:6], "runtime.threads", "runtime.deterministic"),
          code=(*_CLI, *_DATA, "r2kd/distributed.py", "r2kd/export.py", "r2kd/gpu_slots.py", "r2kd/modelfile.py",
                "r2kd/models", "r2kd/recorded.py", "r2kd/runs.py", "r2kd/runtime.py", "r2kd/stages/dataset.py",
                "r2kd/stages/export.py"),
          outputs=("runs/export/",), record="runs/export/export.json"),
    Stage("report", "report", "aggregate runs into reports/",
          keys=(*LIST_KEYS, "export.onnx"),
          code=(*_CLI, "r2kd/recorded.py", "r2kd/runs.py", "r2kd/stages/csvlog.py", "r2kd/stages/report.py"),
          outputs=tuple(f"reports/{f}" for f in ("summary.json", "summary.md", "summary.csv", "curves.csv",
                                                 "accuracy_per_epoch.png", "accuracy_per_method.png",
                                                 "accuracy_vs_latency.png", "accuracy_per_severity.png",
                                                 "metrics.json")),
          record="reports/summary.json"),
)}

# DVC's first stage: validates params.yaml and writes the code stamps (Snakemake validates at parse time).
CHECK_CMD = f"{SCRIPT} check --stamp"

DISTRIBUTED_STAGES = frozenset(name for name, stage in STAGES.items() if stage.distributed)


def code_name(stage_name: str, method: str | None = None) -> str:
    """The name of a code stamp: the stage's, or ``distill-<method>`` for one method's students."""
    return f"{stage_name}-{method}" if method and STAGES[stage_name].per_method else stage_name


def code_entries(name: str, methods: tuple[str, ...] | list[str] = ()) -> tuple[str, ...]:
    """The entries of a code stamp: a stage's (``distill``: what every method shares; a stage with
    ``all_methods``: with the own files of ``methods``, the ones params.yaml lists, so that adding a
    method's files reruns no cohort), ``distill-<method>`` (one method's students: the shared code and
    the method's own files) or ``method-<method>`` (the method's own files alone)."""
    if name in STAGES:
        stage = STAGES[name]
        return (*stage.code, *(f for m in methods for f in METHODS[m].files)) if stage.all_methods else stage.code
    prefix, _, method = name.partition("-")
    if method in METHODS and prefix == "method":
        return METHODS[method].files
    if method in METHODS and prefix in STAGES and STAGES[prefix].per_method:
        return (*STAGES[prefix].code, *METHODS[method].files)
    raise KeyError(name)
