# Shared set-up: params.yaml is read and validated here, at parse time, before any job runs: an
# invalid file stops Snakemake with the same one-line-per-key message as `r2kd check`. (DVC cannot
# validate at parse time, so its DAG has a `check` stage first instead.)
#
# Parsing imports only the torch-free schema (r2kd.config), so `snakemake -n` stays fast.
import functools
import hashlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = workflow.basedir  # the directory of the top-level Snakefile
sys.path.insert(0, ROOT)  # run from a source checkout even without `pip install -e`

from r2kd import paths
from r2kd.config import load_params
from r2kd.errors import UserError
from r2kd.recorded import made_with
from r2kd.runs import student_runs
from r2kd.stagecode import code_files, stamp_text
from r2kd.yamlfile import read_yaml

if config:
    raise WorkflowError(
        "r2kd reads every parameter from params.yaml; --config/--configfile would be ignored. "
        "Edit params.yaml (or use `dvc exp run -S key=value`) instead."
    )

try:
    PARAMS = load_params(os.path.join(ROOT, "params.yaml"))
    RAW_PARAMS = read_yaml(Path(ROOT, "params.yaml"))
except UserError as exc:
    raise WorkflowError(str(exc)) from None


@functools.cache
def dvc_lock():
    """What DVC recorded of each stage's params (dvc.lock, DVC's own file: read leniently, and only
    when a params stamp is first made: it can be large)."""
    import yaml

    try:
        lock = yaml.load(Path(ROOT, "dvc.lock").read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError):
        return {}
    return lock if isinstance(lock, dict) else {}

ENV = "../envs/r2kd.yaml"
THREADS = PARAMS.runtime.threads
PREPARED = [str(paths.PREPARED / name) for name in ("train.pt", "test.pt", "meta.json")]
RUNS = student_runs(PARAMS)


@functools.cache
def code(stage):
    """One input standing for the stage's code (r2kd/stagecode.py): a file of its sources' SHA-256,
    rewritten only when one changes."""
    text = stamp_text(stage, ROOT)
    path = Path(ROOT, ".r2kd", "code", f"{stage}.json")
    if not path.is_file() or path.read_text() != text:
        existed = path.is_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        if not existed:  # dated when the code last changed, not when Snakemake first saw it
            newest = max(Path(ROOT, f).stat().st_mtime for f in code_files(stage, ROOT))
            os.utime(path, (newest, newest))
    return str(path.relative_to(ROOT))


RESOLVED = PARAMS.model_dump(mode="json")  # once: a dump per job would make parsing quadratic


def resolved(dotted):
    node = RESOLVED
    for part in dotted.split("."):
        node = node[part]
    return node


def params_of(*keys):
    """The values of these params.yaml keys, as Snakemake `params:` (a change reruns the job)."""
    return json.dumps({key: resolved(key) for key in keys}, sort_keys=True)


STALE = "outputs_on_disk_recorded_other_values"  # the key a stamp gains while its job's result is stale


def params_stamp(name, dvc_stage, provenance, *keys):
    """A file holding these params' values, rewritten only when they change: an input that reruns
    the job when its outputs were made with other values, even by DVC, which leaves Snakemake no
    record of the params they were made with (so `params:` alone cannot see it).

    Snakemake reruns a job for an input newer than its outputs whose content differs from the one it
    recorded when it last ran the job. A job whose result records the params it was made with
    (``provenance``, r2kd/recorded.py) is judged by that record, whichever tool made it:
    - it records these values: the stamp is dated long ago, so no params change reruns it (DVC made
      it after a change: `dvc exp run -S`, `dvc checkout`);
    - it records others: the stamp names that record and when it was noticed, and is dated now, so
      it differs from whatever Snakemake recorded (which may be these very values, from its own run
      before DVC remade the result) and is newer than the result.
    Without such a record, a rewritten stamp is dated now, and a new one long ago (nothing known to
    have changed) unless dvc.lock says DVC made this stage's outputs with other values.
    """
    path = Path(ROOT, ".r2kd", "params", f"{name}.json")
    values = {key: resolved(key) for key in keys}
    text = json.dumps(values, sort_keys=True)
    held = path.read_text() if path.is_file() else None
    record = None if provenance is None else Path(ROOT, provenance)
    made = None if record is None else made_with(record, values)
    if made is False:
        digest = hashlib.sha256(record.read_bytes()).hexdigest()
        newest = max(f.stat().st_mtime for f in record.parent.iterdir() if f.is_file())
        if stale_record(held) != digest or path.stat().st_mtime <= newest:
            write_stamp(path, json.dumps({**values, STALE: {"record": digest, "noticed_ns": time.time_ns()}},
                                         sort_keys=True))
        return str(path.relative_to(ROOT))
    if held != text:
        write_stamp(path, text)
    if made is True:
        if path.stat().st_mtime != 0:
            os.utime(path, (0, 0))
    elif held is None:
        recorded = dvc_lock().get("stages", {}).get(dvc_stage, {}).get("params", {}).get("params.yaml")
        if recorded is None or recorded == {key: raw_value(key) for key in keys}:
            os.utime(path, (0, 0))
    return str(path.relative_to(ROOT))


def stale_record(text):
    """The digest of the record a stamp says its job's outputs contradict, if it says so."""
    try:
        return json.loads(text).get(STALE, {}).get("record") if text else None
    except (ValueError, AttributeError):
        return None


def write_stamp(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def raw_value(dotted):
    node = RAW_PARAMS
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


DISTRIBUTED_STAGES = ("train_teacher", "distill")  # r2kd/launch.py: torchrun with runtime.nproc_per_node


def processes(stage):
    """How many processes one job of ``stage`` runs (torchrun, one GPU each on CUDA)."""
    return PARAMS.runtime.nproc_per_node if stage in DISTRIBUTED_STAGES else 1


def threads(stage):
    """Cores one job of ``stage`` uses: runtime.threads in each of its processes."""
    return THREADS * processes(stage)


def resources(stage):
    """One job = one SLURM task on one node; a training job of N processes asks for N times the
    GPUs (resources.<stage>.gpu is per process) and N x runtime.threads cores (cpus_per_task), and
    torchrun starts the N processes inside it (docs/distributed.md)."""
    res = PARAMS.resources_for(stage)
    n = processes(stage)
    out = {"mem_mb": res.mem_mb, "runtime": res.runtime, "gpu": res.gpu * n}
    if n > 1:
        out["cpus_per_task"] = threads(stage)
    return out


RUNTIME_KEYS = ["runtime.device", "runtime.amp", "runtime.threads", "runtime.deterministic"]
LIST_KEYS = ["teachers", "pairs", "methods", "augments", "seeds", "prune.method", "prune.ratio"]
# The params.yaml keys read by each job, the same as each stage's `params:` in dvc.yaml (tests/test_dag.py).
PARAM_KEYS = {
    "prepare": lambda w: ["data"],
    "train_teacher": lambda w: ["data", f"teachers.{w.teacher}", "train_teacher", *RUNTIME_KEYS, "runtime.fast_path",
                                "runtime.nproc_per_node"],
    "prune": lambda w: ["data", "prune", "train_teacher.seed", *RUNTIME_KEYS],
    "pair": lambda w: [f"pairs.{w.pair}.teacher", f"pairs.{w.pair}.student"],
    "distill": lambda w: ["data", "distill", f"method_params.{w.method}", f"pairs.{w.pair}", "prune.bn_mode",
                          *RUNTIME_KEYS, "runtime.fast_path", "runtime.nproc_per_node", "runtime.sync_frozen_bn"],
    "corrupt": lambda w: ["evaluate.corruptions", "evaluate.corruption_limit", "evaluate.corruption_seed"],
    "evaluate": lambda w: [*LIST_KEYS, "evaluate", "runtime.device", "runtime.amp", "runtime.threads"],
    "export": lambda w: ["export", *LIST_KEYS[:5], "runtime.threads", "runtime.deterministic"],
    "report": lambda w: [*LIST_KEYS, "export.onnx"],
}


# The provenance record of a job's result, for the stages that write one.
PROVENANCE = {
    "train_teacher": lambda w: paths.teacher_dir(w.teacher) / "provenance.json",
    "prune": lambda w: paths.pruned_dir(w.teacher) / "provenance.json",
    "distill": lambda w: paths.student_dir(w.pair, w.method, w.augment, w.seed) / "provenance.json",
}


def rule_params(stage):
    """Snakemake `params:` for the stages without a provenance record. The others leave them out:
    Snakemake's params trigger compares with the values of its own last run of the job, so it would
    rerun a teacher or student that DVC has since made with the current values; their stamps ask
    the result itself."""
    assert stage not in PROVENANCE, stage
    return lambda w: params_of(*PARAM_KEYS[stage](w))


# DVC's name for the stage a job runs (dvc.yaml's foreach/matrix naming).
DVC_NAME = {
    "prepare": lambda w: "prepare",
    "train_teacher": lambda w: f"train_teacher@{w.teacher}",
    "prune": lambda w: f"prune@{w.teacher}",
    "pair": lambda w: f"pair@{w.pair}",
    "distill": lambda w: f"distill@{w.pair}-{w.method}-{w.augment}-{w.seed}",
    "corrupt": lambda w: "corrupt",
    "evaluate": lambda w: "evaluate",
    "export": lambda w: "export",
    "report": lambda w: "report",
}


def rule_stamp(stage):
    record = PROVENANCE.get(stage, lambda w: None)
    return lambda w: params_stamp("/".join([stage, *map(str, w)]), DVC_NAME[stage](w), record(w),
                                  *PARAM_KEYS[stage](w))
