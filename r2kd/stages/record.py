"""What every result carries: its provenance (resolved params, seed, versions, input hashes) in a
file of its own, and its wall-clock timing outside every declared output.

Provenance is not a metric (it would flood `dvc exp show`), and timing is not a result: a forced,
bit-identical rerun must leave every output, and so every downstream stage, unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import sys
from pathlib import Path
from typing import Any

import r2kd
from r2kd import paths
from r2kd.config import Params, section
from r2kd.errors import UserError
from r2kd.files import sha256_file, write_json
from r2kd.recorded import mark_overrides
from r2kd.runtime import effective_amp
from r2kd.stagecode import code_digests


def versions() -> dict[str, str]:
    # Read from package metadata: importing torchvision just for its version costs ~1.5 s.
    from importlib.metadata import PackageNotFoundError, version

    import torch

    found = {"python": sys.version.split()[0], "platform": platform.platform(), "r2kd": r2kd.__version__,
             "torch": torch.__version__}
    for dist in ("torchvision", "torch-pruning", "numpy", "dvc", "snakemake"):
        with contextlib.suppress(PackageNotFoundError):
            found[dist] = version(dist)
    return found


def input_hashes(files: list[Path]) -> dict[str, str]:
    """SHA-256 of every declared input; a missing one is a user error naming the stage that makes it."""
    hashes = {}
    for f in files:
        try:
            hashes[str(f)] = sha256_file(f)
        except FileNotFoundError:
            made_by = paths.producer(Path(f))
            way_out = f"run {made_by} first" if made_by else "restore it"
            raise UserError(f"{f} does not exist (an input of this stage); {way_out}") from None
        except OSError as exc:
            raise UserError(f"cannot read {f}: {exc.strerror or exc}") from exc
    return hashes


CHECKOUT = Path(__file__).resolve().parents[2]  # the code that runs, wherever the stage runs from


def fingerprint(stage: str, *parts: Any) -> str:
    """A stable hash of ``parts`` (params, input hashes, seed, ...) and of the code that computes
    them: the SHA-256 of each source file of ``stage`` (r2kd.stagecode.code_digests, the very stamp
    DVC and Snakemake rerun the stage on) and the library versions.

    Resume state is keyed on it: a run killed, then resumed after an edit of its code, starts over
    instead of mixing epochs trained by two versions of the code. A distill run's result key
    (r2kd.stages.distill.result_key) is one too.
    """
    libraries = {k: v for k, v in versions().items() if k != "platform"}  # what a result depends on
    parts = [*parts, code_digests(stage, CHECKOUT), libraries]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def provenance(params: Params, keys: list[str], inputs: dict[str, str], seed: int | None, device: Any,
               **identity: Any) -> dict:
    return {
        **identity,
        "seed": seed,
        "params": mark_overrides({key: section(params, key) for key in keys}),
        "inputs_sha256": inputs,
        "versions": versions(),
        "device": str(device),
        # what ran, which can differ from runtime.amp (fp16 on a CPU runs in float32)
        "amp": effective_amp(params.runtime.amp, device),
        "command": " ".join(["r2kd", *sys.argv[1:]]),
    }


def metrics(result: Any, **size: int) -> dict:
    """metrics.json of a model from its FitResult: numbers only (`dvc exp show`, `dvc metrics`), accuracy first."""
    return {"best_top1": result.best_top1, "last_top1": result.last["test_top1"], "best_epoch": result.best_epoch,
            "last_top5": result.last["test_top5"], **size}


def write_timing(out_dir: Path, **timing: Any) -> None:
    write_json(paths.timing_file(out_dir), timing)
