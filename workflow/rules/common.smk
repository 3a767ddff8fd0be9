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

from r2kd import handoff, paths
from r2kd.config import load_params
from r2kd.errors import UserError
from r2kd.pipeline import DISTRIBUTED_STAGES, STAGES
from r2kd.pipeline import METHODS as METHOD_SPECS
from r2kd.recorded import made_with
from r2kd.runs import student_runs
from r2kd.stagecode import code_files, stamp_text
from r2kd.yamlfile import read_yaml

# --- params: params.yaml with Snakemake's --config / --configfile (docs/snakemake.md) ------------
# Snakemake reads params.yaml as its `configfile:` (PyYAML, YAML 1.1) and merges the command line's
# overrides into `config`. The values the jobs run with are read here with r2kd's reader, which
# refuses what YAML 1.1 and 1.2 (DVC) read differently: params.yaml, each --configfile, and each
# --config value (`key=YAML`, e.g. `distill='{lr: 0.02}'`, merged into the section as Snakemake
# merges). r2kd's own validation names any bad key; then `config` holds these values and
# snakemake.utils.validate checks them against workflow/schemas/params.schema.json. With overrides,
# the effective params go to a file the jobs read ($R2KD_PARAMS, passed to SLURM jobs by the
# Snakefile's `envvars:`): their results record those values and say they were overridden, and the
# hand-off to DVC leaves them out of dvc.lock (r2kd/handoff.py).
import copy

import yaml
from snakemake.utils import update_config, validate

from r2kd.config import parse_params
from r2kd.recorded import PARAMS_ENV
from r2kd.yamlfile import parse_yaml


def command_line_params():
    """The --configfile files, then the --config entries, as (what the user wrote, values)."""
    settings = workflow.config_settings
    layers = [(f"--configfile {os.path.relpath(f, ROOT)}", read_yaml(Path(f))) for f in settings.configfiles or ()]
    args = settings.config_args
    if isinstance(args, (list, tuple)) and all(isinstance(a, str) and "=" in a for a in args):
        for arg in args:  # the command line's text, read as YAML by r2kd's reader
            key, _, text = arg.partition("=")
            layers.append((f"--config {arg}", {key: parse_yaml(text, f"--config {key}")}))
    elif settings.config:  # called through the API: what Snakemake parsed
        layers.append(("--config", copy.deepcopy(dict(settings.config))))
    for source, values in layers:
        if not isinstance(values, dict):
            raise UserError(f"{source}: must be a mapping of params.yaml sections")
    return layers


def effective_params():
    """(raw values, validated Params, the file the jobs read, the overrides given)."""
    base = read_yaml(Path(ROOT, "params.yaml"))
    layers = command_line_params()
    raw = {} if workflow.config_settings.replace_workflow_config and layers else copy.deepcopy(base)
    for _, values in layers:
        update_config(raw, values)
    if raw == base:
        return raw, load_params(os.path.join(ROOT, "params.yaml")), "params.yaml", []
    given = [source for source, _ in layers]
    params = parse_params(raw, source=f"params.yaml with {' '.join(given)}")
    header = (f"# params.yaml with Snakemake's {' '.join(given)}\n# (written by workflow/rules/common.smk; "
              "the jobs of that run read this file)")
    text = f"{header}\n{yaml.safe_dump(raw, sort_keys=False)}"
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = Path(ROOT, ".r2kd", "snakemake", f"params-{digest}.yaml")  # never rewritten under a running job
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".tmp").write_text(text)
        os.replace(path.with_suffix(".tmp"), path)
    if read_yaml(path) != raw:
        raise UserError(f"{' '.join(given)}: the values do not survive a YAML round trip; use --configfile")
    return raw, params, str(path.relative_to(ROOT)), given


try:
    RAW_PARAMS, PARAMS, PARAMS_FILE, OVERRIDES = effective_params()
except UserError as exc:
    raise WorkflowError(str(exc)) from None
config.clear()
config.update(copy.deepcopy(RAW_PARAMS))  # what the jobs run with, as Snakemake's `config`
validate(config, "../schemas/params.schema.json", set_default=False)
os.environ[PARAMS_ENV] = PARAMS_FILE  # what `workflow/scripts/r2kd <stage>` reads (r2kd/recorded.py)
if OVERRIDES:
    print(f"r2kd: jobs read {PARAMS_FILE}: params.yaml with {' '.join(OVERRIDES)}; their results record "
          "these values and stay out of dvc.lock", file=sys.stderr)
# --- end params -----------------------------------------------------------------------------------

# Files DVC restored or rewrote with the same content are dated after their inputs, so Snakemake
# plans what `dvc status` says (r2kd/handoff.py align_with_dvc; a stat of each file when nothing moved).
handoff.align_with_dvc(say=functools.partial(print, file=sys.stderr))


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

def snakemake_started():
    try:
        handoff.snakemake_started()
    except UserError as exc:
        raise WorkflowError(str(exc)) from None


def snakemake_ended():
    handoff.snakemake_ended()


ENV = "../envs/r2kd.yaml"
THREADS = PARAMS.runtime.threads
PREPARED = [str(paths.PREPARED / name) for name in ("train.pt", "test.pt", "meta.json")]
RUNS = student_runs(PARAMS)


@functools.cache
def code(stage):
    """One input standing for the stage's code (r2kd/stagecode.py; ``method-<name>`` for a method's own
    files): a file of its sources' SHA-256, rewritten only when one changes."""
    text = stamp_text(stage, ROOT, PARAMS.methods)
    path = Path(ROOT, ".r2kd", "code", f"{stage}.json")
    if not path.is_file() or path.read_text() != text:
        write_stamp(path, text)
        # dated when the code last changed, not when Snakemake noticed: a dry run between an edit and
        # its undo then changes nothing (the undone file is no newer than results DVC vouches for)
        newest = max(Path(ROOT, f).stat().st_mtime for f in code_files(stage, ROOT, PARAMS.methods))
        os.utime(path, (newest, newest))
    return str(path.relative_to(ROOT))


def data_index():
    """The input standing for the user's data under data.root (dvc.yaml's `${data.root}` dep): a
    digest of every file's path, size and mtime, rewritten only when one changes, so an added,
    removed or replaced file reruns `prepare` (which hashes what it reads: meta.json)."""
    root = Path(ROOT, PARAMS.data.root)
    entries, newest = [], 0
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            stat = os.stat(os.path.join(folder, name))
            entries.append(f"{os.path.relpath(os.path.join(folder, name), root)}\t{stat.st_size}\t{stat.st_mtime_ns}")
            newest = max(newest, stat.st_mtime)
    digest = hashlib.sha256("\n".join(entries).encode()).hexdigest()
    text = json.dumps({"root": PARAMS.data.root, "files": len(entries), "sha256": digest}, indent=1) + "\n"
    path = Path(ROOT, ".r2kd", "data", "index.json")
    if not path.is_file() or path.read_text() != text:
        existed = path.is_file()
        write_stamp(path, text)
        if not existed:  # dated when the data last changed, not when Snakemake first saw it
            os.utime(path, (newest, newest))
    return str(path.relative_to(ROOT))


RESOLVED = PARAMS.model_dump(mode="json")  # once: a dump per job would make parsing quadratic


def resolved(dotted):
    node = RESOLVED
    for part in dotted.split("."):
        node = node[part]
    return node


STALE = "outputs_on_disk_recorded_other_values"  # the key a stamp gains while its job's result is stale


def params_stamp(name, dvc_stage, record, *keys):
    """A job's params input: a file holding the values of its stage's params.yaml keys, rewritten
    when they change, and dated so that Snakemake reruns the job exactly when the result on disk
    was made with other values, whichever tool made it.

    Snakemake reruns a job for an input newer than its outputs whose content differs from the one
    it recorded when it last ran the job; and DVC leaves it no record of what DVC made. So the rules
    have no `params:` (its trigger compares with Snakemake's own last run, and would redo every
    result DVC made after a change), and each job asks its result: ``record`` (r2kd/recorded.py),
    where the result keeps the values it was made with.
    - It holds these values: the stamp is dated long ago, so no params change reruns the job (DVC
      made it after the change: `dvc exp run -S`, `dvc checkout`, `dvc exp apply`).
    - It holds others: the stamp names that record and when it was noticed, and is dated now, so
      it differs from whatever Snakemake recorded (possibly these very values, from its own run
      before DVC remade the result) and is newer than the result.
    - No readable record (no result yet, or one from before results recorded their params): a
      rewritten stamp is dated now, and a new one long ago unless dvc.lock says DVC made this
      stage's outputs with other values.
    """
    path = Path(ROOT, ".r2kd", "snakemake", "params", f"{name}.json")  # reruns read "updated input files: <this>"
    values = {key: resolved(key) for key in keys}
    text = json.dumps(values, sort_keys=True)
    held = path.read_text() if path.is_file() else None
    record = Path(ROOT, record)
    made = made_with(record, values)
    if made is False:
        digest = hashlib.sha256(record.read_bytes()).hexdigest()
        newest = max(f.stat().st_mtime for f in record.parent.iterdir() if f.is_file())
        changed = changed_keys(json.loads(record.read_text())["params"], values)  # made_with read it
        say_changed(name, changed)
        if stale_record(held) != digest or path.stat().st_mtime <= newest:
            write_stamp(path, json.dumps({**values, STALE: {"record": digest, "noticed_ns": time.time_ns(),
                                                            "changed": changed}}, sort_keys=True))
        return str(path.relative_to(ROOT))
    if held != text:
        if held is not None and made is None:  # a stamp dated now: say which values changed
            try:
                say_changed(name, changed_keys(json.loads(held), values))
            except (ValueError, AttributeError):
                pass
        write_stamp(path, text)
    if made is True:
        if path.stat().st_mtime != 0:
            os.utime(path, (0, 0))
    elif held is None:
        recorded = dvc_lock().get("stages", {}).get(dvc_stage, {}).get("params", {}).get("params.yaml")
        if recorded is None or recorded == {key: raw_value(key) for key in keys}:
            os.utime(path, (0, 0))
    return str(path.relative_to(ROOT))


def changed_keys(recorded, values):
    """The dotted params keys whose value differs from what a record holds (e.g. distill.lr)."""
    from r2kd.recorded import recorded_value

    found = []

    def walk(key, old, new):
        if isinstance(old, dict) and isinstance(new, dict):
            for part in sorted(set(old) | set(new)):
                walk(f"{key}.{part}", old.get(part, STALE), new.get(part, STALE))
        elif old != new:
            found.append(key)

    for key, value in values.items():
        walk(key, recorded_value(recorded, key), value)
    return found


SAID = set()


def say_changed(job, changed):
    """Why a job reruns, in words: Snakemake's own reason names only the params stamp it reads."""
    if tuple(changed) not in SAID:
        SAID.add(tuple(changed))
        print(f"r2kd: {job} (and each job like it) reruns: params changed: {', '.join(changed) or '?'} "
              "(Snakemake's reason names its params stamp, .r2kd/snakemake/params/...)", file=sys.stderr)


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


def rule_stamp(stage):
    """The input function giving a job of ``stage`` its params stamp: the stage's keys, DVC name and
    record file come from the pipeline table (r2kd/pipeline.py)."""
    spec = STAGES[stage]

    def params_input(wildcards):
        args = dict(wildcards.items())
        return params_stamp("/".join([stage, *map(str, wildcards)]), spec.dvc_name(**args), spec.record_path(**args),
                            *spec.params_keys(**args))

    return params_input


def method_code(wildcards):
    """A student's second code stamp: its method's own files (dvc.yaml's r2kd/methods/<method>.py
    dep), so an edit of r2kd/methods/kd.py reruns the kd students only."""
    return code(f"method-{wildcards.method}")


def pair_teacher(wildcards):
    return f"runs/teachers/{PARAMS.pairs[wildcards.pair].teacher}/model.pt"


def pruned_teacher(wildcards):
    return f"runs/pruned/{PARAMS.pairs[wildcards.pair].teacher}/model.pt"


def method_pin(wildcards):
    """A student's pin of the pruned teacher (r2kd/stages/pair_pruned.py). For a method that does not
    run it the pin never changes, and it is `ancient`: rerunning pair_pruned (a new pruned teacher)
    then reruns none of that method's students, as in DVC, which compares the pin's hash."""
    path = f"runs/pairs/{wildcards.pair}/{wildcards.method}.json"
    return path if METHOD_SPECS[wildcards.method].uses_pruned_teacher else ancient(path)
