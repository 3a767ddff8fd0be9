"""`r2kd warm` against a fresh Python per stage: the whole `dvc repro`, and single stage commands.

    python benchmarks/bench_warm.py                    # the repo's params.yaml (the embedded default)
    python benchmarks/bench_warm.py --rounds 2         # cold, warm, warm, cold: order effects cancel
    python benchmarks/bench_warm.py --skip-pipeline    # only the per-command rows (seconds, not minutes)

In temporary copies of this checkout (tracked files, the running environment linked as .venv, git
initialised: what a fresh clone sees):

1. the whole pipeline (`dvc repro`), once with every stage a fresh Python (cold) and once with the
   stages forked from `r2kd warm` (warm), in two copies, alternating which goes first each round;
   the outputs of the two are compared byte for byte (bar provenance-free clocks: latency.json and
   the plot drawn from it);
2. single commands after the pipeline, interleaved cold/warm, median of ``--repeats``:
   `r2kd pair` (start-up plus a few file reads), `r2kd report` and one `distill` of the ce run.

Prints rich tables and the warm/cold ratios; nothing here is a unit test.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_startup import REPO, copy_checkout  # noqa: E402

CLOCKS = ("latency.json", "accuracy_vs_latency.png")  # what a clock measured: differs run to run


def timed(cmd: str, cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, shell=True, check=True, capture_output=True)
    return time.perf_counter() - start


def outputs(root: Path) -> dict[str, str]:
    found = {}
    for sub in ("data/prepared", "runs", "reports"):
        for path in sorted((root / sub).rglob("*")):
            if path.is_file() and path.name not in CLOCKS:
                found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def pipeline(copy: Path, warm: bool) -> float:
    if warm:
        subprocess.run("workflow/scripts/r2kd warm", cwd=copy, shell=True, check=True, capture_output=True)
    try:
        return timed(".venv/bin/dvc repro", copy)
    finally:
        if warm:
            subprocess.run("workflow/scripts/r2kd warm --stop", cwd=copy, shell=True, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="r2kd-bench-warm-") as tmp:
        cold_copy, warm_copy = copy_checkout(Path(tmp) / "cold"), copy_checkout(Path(tmp) / "warm")
        table = Table(title="whole pipeline: dvc repro (s)")
        for column in ("round", "cold", "warm", "warm / cold"):
            table.add_column(column, justify="right")
        if not args.skip_pipeline:
            for round_ in range(args.rounds):
                times = {}
                for warm in ((False, True) if round_ % 2 == 0 else (True, False)):
                    copy = warm_copy if warm else cold_copy
                    if round_:  # rebuild from nothing: no run cache, no outputs
                        subprocess.run("rm -rf runs reports data/prepared data/corrupted .r2kd/state .dvc/cache "
                                       ".dvc/tmp dvc.lock", cwd=copy, shell=True, check=True)
                    console.print(f"round {round_ + 1}: dvc repro, {'warm' if warm else 'cold'} ...")
                    times[warm] = pipeline(copy, warm)
                table.add_row(str(round_ + 1), f"{times[False]:.1f}", f"{times[True]:.1f}",
                              f"{times[True] / times[False]:.2f}")
            console.print(table)
            cold_out, warm_out = outputs(cold_copy), outputs(warm_copy)
            differ = sorted(k for k in cold_out.keys() | warm_out.keys() if cold_out.get(k) != warm_out.get(k))
            console.print(f"outputs compared: {len(cold_out)} files, {len(differ)} differ" +
                          (f": {differ}" if differ else " (same bytes)"))
        else:
            subprocess.run(".venv/bin/dvc repro", cwd=cold_copy, shell=True, check=True, capture_output=True)

        copy = cold_copy
        params = subprocess.run(".venv/bin/python -m r2kd stages", cwd=copy, shell=True, check=True,
                                capture_output=True, text=True).stdout
        pair = next(line.split("\t")[1] for line in params.splitlines() if line.startswith("pair@"))
        distill = next(line.split("\t")[1] for line in params.splitlines() if line.startswith("distill@")
                       and "-ce-" in line)
        commands = {"pair": pair, "report": "workflow/scripts/r2kd report", "distill (ce)": distill}
        subprocess.run("workflow/scripts/r2kd warm", cwd=copy, shell=True, check=True, capture_output=True)
        enabled = copy / ".r2kd/warm/enabled"
        rows = Table(title=f"one stage command (s, median of {args.repeats}, interleaved)")
        for column in ("command", "cold", "warm", "warm / cold"):
            rows.add_column(column, justify="right")
        try:
            for label, cmd in commands.items():
                if label.startswith("distill"):  # its outputs exist: rerun it from nothing each time
                    target = cmd.split()[-4:]
                    out = f"runs/students/{target[0]}/{target[1]}-{target[2]}/s{target[3]}"
                    cmd = f"rm -rf {out} && {cmd}"
                cold, warm = [], []
                for _ in range(args.repeats):
                    text = enabled.read_text()
                    enabled.unlink()  # the launcher runs a fresh Python
                    cold.append(timed(cmd, copy))
                    enabled.write_text(text)
                    warm.append(timed(cmd, copy))
                c, w = statistics.median(cold), statistics.median(warm)
                rows.add_row(label, f"{c:.2f}", f"{w:.2f}", f"{w / c:.2f}")
        finally:
            subprocess.run("workflow/scripts/r2kd warm --stop", cwd=copy, shell=True, check=True, capture_output=True)
        console.print(rows)


if __name__ == "__main__":
    main()
