"""The source files each kind of stage runs, and a stamp of their contents.

Each stage's code is its import closure (tests/test_dag.py checks these lists cover it). Both tools
rerun a stage when one of its files changes, and only then, through ONE small stamp per stage kind:
a JSON map of file -> SHA-256, whose content changes only when a digest does.

- DVC: the `check` stage, which depends on the whole `r2kd/` tree, writes `runs/code/<stage>.json`;
  each stage depends on its own stamp. Listing 40 source files per stage instead made dvc.lock
  ~1,000 entries for the default matrix, and DVC re-parses dvc.lock (ruamel, round trip) on every
  no-op status check and twice per stage it runs: most of a no-op `dvc repro`'s time.
- Snakemake: the Snakefile writes `.r2kd/code/<stage>.json` at parse time (a job with one code input
  instead of forty keeps its DAG cheap). A file of its own, not DVC's: DVC's `check` rewrites its
  stamps on every params.yaml change (DVC deletes a stage's outputs before running it), and the
  newer date would make Snakemake rerun every job after any `dvc exp run`.

An edit in place reruns the stage; a touched file, bytecode or an editor's swap file does not.
Standard library only: Snakemake's parse and `r2kd check` import this without torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# Directories stand for every .py file under them.
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "prepare": (
        "workflow/scripts/r2kd", "r2kd/__init__.py", "r2kd/__main__.py", "r2kd/cli.py", "r2kd/config.py",
        "r2kd/data/__init__.py", "r2kd/data/datasets", "r2kd/data/idx.py", "r2kd/data/index.py",
        "r2kd/data/prepared.py", "r2kd/data/registry.py", "r2kd/data/safe_pickle.py", "r2kd/data/sources.py",
        "r2kd/data/storage.py", "r2kd/data/transforms.py", "r2kd/data/write.py", "r2kd/data/write_stream.py",
        "r2kd/errors.py", "r2kd/files.py", "r2kd/paths.py", "r2kd/pickle_scan.py", "r2kd/stages/__init__.py",
        "r2kd/stages/prepare.py", "r2kd/yamlfile.py"
    ),
    "train_teacher": (
        "workflow/scripts/r2kd", "r2kd/__init__.py", "r2kd/__main__.py", "r2kd/cli.py", "r2kd/config.py",
        "r2kd/data/__init__.py", "r2kd/data/index.py", "r2kd/data/loader.py", "r2kd/data/prepared.py",
        "r2kd/data/registry.py", "r2kd/data/stream.py", "r2kd/data/transforms.py", "r2kd/distributed.py",
        "r2kd/errors.py", "r2kd/evaluation.py", "r2kd/files.py", "r2kd/gpu_slots.py",
        "r2kd/fast/__init__.py", "r2kd/fast/graphs.py",
        "r2kd/modelfile.py", "r2kd/models", "r2kd/optim.py", "r2kd/parallel.py",
        "r2kd/paths.py", "r2kd/pickle_scan.py", "r2kd/pretrained.py", "r2kd/runtime.py", "r2kd/stages/__init__.py",
        "r2kd/stages/csvlog.py", "r2kd/stages/dataset.py", "r2kd/stages/record.py",
        "r2kd/stages/train_teacher.py", "r2kd/syncbn.py", "r2kd/train.py", "r2kd/yamlfile.py",
        "r2kd/stagecode.py",  # r2kd.stages.record keys resume state on the stage's code
    ),
    "prune": (
        "workflow/scripts/r2kd", "r2kd/__init__.py", "r2kd/__main__.py", "r2kd/cli.py", "r2kd/config.py",
        "r2kd/data/__init__.py", "r2kd/data/index.py", "r2kd/data/loader.py", "r2kd/data/prepared.py",
        "r2kd/data/registry.py", "r2kd/data/stream.py", "r2kd/data/transforms.py", "r2kd/distributed.py",
        "r2kd/errors.py", "r2kd/evaluation.py", "r2kd/files.py", "r2kd/gpu_slots.py",
        "r2kd/fast/__init__.py", "r2kd/fast/graphs.py",
        "r2kd/modelfile.py", "r2kd/models", "r2kd/optim.py", "r2kd/paths.py", "r2kd/pickle_scan.py",
        "r2kd/pruning", "r2kd/runtime.py", "r2kd/stages/__init__.py", "r2kd/stages/dataset.py",
        "r2kd/stages/prune.py", "r2kd/stages/record.py", "r2kd/train.py", "r2kd/yamlfile.py",
        "r2kd/stagecode.py",  # r2kd.stages.record keys resume state on the stage's code
    ),
    "pair": (
        "workflow/scripts/r2kd", "r2kd/__init__.py", "r2kd/__main__.py", "r2kd/cli.py", "r2kd/config.py",
        "r2kd/errors.py", "r2kd/files.py", "r2kd/gpu_slots.py", "r2kd/models/__init__.py",
        "r2kd/models/complexity.py", "r2kd/models/layers.py", "r2kd/models/mobilenetv1.py",
        "r2kd/models/mobilenetv2.py", "r2kd/models/registry.py", "r2kd/models/resnet.py",
        "r2kd/models/shufflenetv1.py", "r2kd/models/shufflenetv2.py", "r2kd/models/torchvision_zoo.py",
        "r2kd/models/vgg.py", "r2kd/models/wrn.py", "r2kd/paths.py", "r2kd/pickle_scan.py", "r2kd/recorded.py",
        "r2kd/runtime.py",
        "r2kd/stages/__init__.py", "r2kd/stages/pair.py", "r2kd/stages/record.py", "r2kd/yamlfile.py",
        "r2kd/stagecode.py",  # r2kd.stages.record keys resume state on the stage's code
    ),
    "distill": (
        "workflow/scripts/r2kd", "r2kd/__init__.py", "r2kd/__main__.py", "r2kd/augment.py", "r2kd/cli.py",
        "r2kd/config.py", "r2kd/data/__init__.py", "r2kd/data/index.py",
        "r2kd/data/loader.py", "r2kd/data/prepared.py", "r2kd/data/registry.py", "r2kd/data/stream.py",
        "r2kd/data/transforms.py",
        "r2kd/distributed.py", "r2kd/errors.py", "r2kd/evaluation.py", "r2kd/files.py", "r2kd/gpu_slots.py",
        "r2kd/fast", "r2kd/lock.py", "r2kd/methods", "r2kd/modelfile.py", "r2kd/models", "r2kd/optim.py",
        "r2kd/parallel.py", "r2kd/paths.py", "r2kd/pickle_scan.py", "r2kd/recorded.py",
        "r2kd/pruning/__init__.py",
        "r2kd/pruning/bn.py", "r2kd/pruning/methods.py", "r2kd/runs.py", "r2kd/runtime.py", "r2kd/stagecode.py",
        "r2kd/stages/__init__.py", "r2kd/stages/csvlog.py", "r2kd/stages/dataset.py",
        "r2kd/stages/distill.py", "r2kd/stages/pair.py", "r2kd/stages/record.py",
        "r2kd/syncbn.py", "r2kd/train.py", "r2kd/yamlfile.py"
    ),
    "corrupt": (
        "workflow/scripts/r2kd", "r2kd/__init__.py", "r2kd/__main__.py", "r2kd/cli.py", "r2kd/config.py",
        "r2kd/corruptions.py", "r2kd/data/__init__.py", "r2kd/data/corrupted.py", "r2kd/data/prepared.py",
        "r2kd/errors.py", "r2kd/files.py", "r2kd/paths.py", "r2kd/pickle_scan.py", "r2kd/recorded.py",
        "r2kd/stages/__init__.py", "r2kd/stages/corrupt.py", "r2kd/workers.py", "r2kd/yamlfile.py"
    ),
    "evaluate": (
        "workflow/scripts/r2kd", "r2kd/__init__.py", "r2kd/__main__.py", "r2kd/cli.py", "r2kd/config.py",
        "r2kd/data/__init__.py", "r2kd/data/corrupted.py", "r2kd/data/index.py", "r2kd/data/loader.py",
        "r2kd/data/prepared.py", "r2kd/data/registry.py", "r2kd/data/stream.py", "r2kd/data/transforms.py",
        "r2kd/distributed.py", "r2kd/errors.py", "r2kd/evaluation.py", "r2kd/files.py", "r2kd/gpu_slots.py",
        "r2kd/modelfile.py", "r2kd/models", "r2kd/paths.py", "r2kd/pickle_scan.py", "r2kd/recorded.py",
        "r2kd/runs.py",
        "r2kd/runtime.py", "r2kd/stages/__init__.py", "r2kd/stages/dataset.py", "r2kd/stages/evaluate.py",
        "r2kd/workers.py", "r2kd/yamlfile.py"
    ),
    "export": (
        "workflow/scripts/r2kd", "r2kd/__init__.py", "r2kd/__main__.py", "r2kd/cli.py", "r2kd/config.py",
        "r2kd/data/__init__.py", "r2kd/data/index.py", "r2kd/data/loader.py", "r2kd/data/prepared.py",
        "r2kd/data/registry.py", "r2kd/data/stream.py", "r2kd/data/transforms.py", "r2kd/distributed.py",
        "r2kd/errors.py", "r2kd/export.py", "r2kd/files.py", "r2kd/gpu_slots.py", "r2kd/modelfile.py",
        "r2kd/models", "r2kd/paths.py", "r2kd/pickle_scan.py", "r2kd/recorded.py",
        "r2kd/runs.py", "r2kd/runtime.py",
        "r2kd/stages/__init__.py", "r2kd/stages/dataset.py", "r2kd/stages/export.py", "r2kd/yamlfile.py"
    ),
    "report": (
        "workflow/scripts/r2kd", "r2kd/__init__.py", "r2kd/__main__.py", "r2kd/cli.py", "r2kd/config.py",
        "r2kd/errors.py", "r2kd/files.py", "r2kd/paths.py", "r2kd/pickle_scan.py", "r2kd/recorded.py",
        "r2kd/runs.py",
        "r2kd/stages/__init__.py", "r2kd/stages/csvlog.py", "r2kd/stages/report.py", "r2kd/yamlfile.py"
    ),
}


def code_files(stage: str, root: str | Path = ".") -> list[str]:
    """The source files of ``stage``, directories expanded to their .py files, repository-relative."""
    root = Path(root)
    files: set[str] = set()
    for entry in STAGE_CODE[stage]:
        path = root / entry
        if path.is_dir():
            files.update(p.relative_to(root).as_posix() for p in path.rglob("*.py"))
        else:
            files.add(entry)
    return sorted(files)


def code_digests(stage: str, root: str | Path = ".") -> dict[str, str]:
    return {f: hashlib.sha256((Path(root) / f).read_bytes()).hexdigest() for f in code_files(stage, root)}


def stamp_text(stage: str, root: str | Path = ".") -> str:
    return json.dumps(code_digests(stage, root), indent=0, sort_keys=True)
