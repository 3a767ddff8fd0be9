"""`make run` end to end, this checkout against an earlier commit, on the same machine in one run.

    python benchmarks/bench_make_run.py --baseline 991525f            # 2 rounds, alternating order
    python benchmarks/bench_make_run.py --baseline HEAD~3 --rounds 3

Each variant is a fresh copy (this working tree; the baseline from `git archive`), git initialised,
the running environment linked as .venv (`make -o .venv/.r2kd-installed` keeps make from
reinstalling it): what a fresh clone with its environment installed sees. Every round runs
`make run` once in each copy, the order alternating round by round, from a clean copy each time
(`git clean -xfd`, the link kept), in an environment without an activated venv. Printed: each
run's wall time and the load average before it (other users of the machine move these numbers),
the median per variant and baseline/current; and whether the two summary.json, results tables and
eval.json's scores are the same bytes (they must be: speed work changes no result). Not a unit test.

`make run` is plain `make run`: DVC's check stage, `dvc repro`, the table. It takes no CORES (since the
issue "Plain to read, plain to run" it runs the stages one at a time); a baseline older than that
ran its own `make run`, whatever that was at the time, with that Makefile's default CORES.

On Linux each run's CPU work is printed too: the machine's busy core-seconds over the run, from
/proc/stat (every process of the machine counts, so run it on an otherwise idle machine). Divided
by the machine's cores it is a floor no scheduling can beat: the run cannot end before its work is done.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_startup import REPO, as_fresh_clone, copy_checkout  # noqa: E402

RESULTS = ("reports/summary.json", "reports/summary.md", "reports/eval.json")


def archive_checkout(rev: str, dest: Path) -> Path:
    """``rev``'s tracked files as a fresh clone has them, the running environment linked."""
    dest.mkdir(parents=True)
    tar = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x"], cwd=dest, input=tar, check=True)
    return as_fresh_clone(dest, rev)


def busy_core_seconds() -> float | None:
    """CPU time the machine spent busy since boot, all cores summed (None where /proc/stat is missing)."""
    try:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, Path("/proc/stat").read_text().split()[1:8])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def make_run(copy: Path) -> tuple[float, float | None]:
    subprocess.run(["git", "clean", "-xfdq", "-e", ".venv"], cwd=copy, check=True)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}  # no venv activated
    busy, start = busy_core_seconds(), time.perf_counter()
    done = subprocess.run(["make", "-o", ".venv/.r2kd-installed", "run"], cwd=copy, env=env,
                          capture_output=True, text=True)
    seconds, busy_after = time.perf_counter() - start, busy_core_seconds()
    if done.returncode:
        raise SystemExit(f"make run failed in {copy}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, None if busy is None or busy_after is None else busy_after - busy


def digest(copy: Path) -> dict[str, str]:
    """The results' bytes (summary.json, the table), and every model's scores in eval.json (its other keys may change
    with the file's format: it gained the params it was made with on 2026-11-27; and a model's path with the runs'
    layout, which moved the seed up a folder on 2026-12-07: a record names its model by pair, method, augment, seed)."""
    out = {}
    for rel in RESULTS:
        data = (copy / rel).read_bytes()
        if rel.endswith("eval.json"):
            models = [{k: v for k, v in m.items() if k != "path"} for m in json.loads(data)["models"]]
            data = json.dumps(sorted(models, key=lambda m: json.dumps(m, sort_keys=True)), sort_keys=True).encode()
        if rel.endswith("summary.json"):  # apart: the params keys its record holds change with the schema
            summary = json.loads(data)
            out["params record"] = json.dumps(summary.pop("params", None), sort_keys=True)
            rest = json.dumps(summary, sort_keys=True).encode()
            out[f"{rel} but its params record"] = hashlib.sha256(rest).hexdigest()
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="a commit of this repository to compare against")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench-make-run-") as tmp:
        copies = {"current": copy_checkout(Path(tmp) / "current"),
                  f"baseline {args.baseline}": archive_checkout(args.baseline, Path(tmp) / "baseline")}
        names = list(copies)
        times: dict[str, list[str]] = {name: [] for name in names}
        seconds: dict[str, list[float]] = {name: [] for name in names}
        digests: dict[str, dict[str, str]] = {}
        for round_ in range(args.rounds):
            for name in names if round_ % 2 else names[::-1]:  # the baseline first in round 1
                load = os.getloadavg()[0]
                took, work = make_run(copies[name])
                seconds[name].append(took)
                cpu = "" if work is None else f", CPU {work:.0f} core-s"
                times[name].append(f"{took:.1f} s (load {load:.2f}{cpu})")
                digests[name] = digest(copies[name])
                floor = "" if work is None else f"; CPU busy {work:.1f} core-s, so >= {work / cores:.1f} s on this machine's {cores} cores"
                console.print(f"round {round_ + 1}: {name}: {took:.1f} s (load before: {load:.2f}{floor})")
        table = Table(title=f"make run, {cores}-core machine, {args.rounds} round(s), order alternating")
        table.add_column("variant")
        for round_ in range(args.rounds):
            table.add_column(f"round {round_ + 1}", justify="right")
        table.add_column("median", justify="right")
        for name in names:
            table.add_row(name, *times[name], f"{statistics.median(seconds[name]):.1f} s")
        console.print(table)
        current, baseline = (statistics.median(seconds[name]) for name in names)
        console.print(f"baseline / current: {baseline / current:.2f}x")
        same = digests[names[0]] == digests[names[1]]
        for rel in digests[names[0]]:
            ours, theirs = digests[names[0]][rel], digests[names[1]][rel]
            if rel == "params record":
                if ours != theirs:
                    console.print(f"summary.json's params record: {escape(theirs)} -> {escape(ours)}")
                continue
            verdict = "the same" if ours == theirs else "[red]DIFFERENT[/]"
            console.print(f"{rel}{' (scores)' if rel.endswith('eval.json') else ''}: {verdict} bytes")
        if not same:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
