"""What the tools cost at 1,000 student runs: `snakemake -n`, `dvc commit --force` and `dvc status`,
in this pipeline and in a BARE DAG of the same shape (the tools' own cost).

    .venv/bin/python benchmarks/bench_scale.py                       # 2 pairs x 5 methods x 1 augment x 100 seeds
    .venv/bin/python benchmarks/bench_scale.py --seeds 10 --repeat 1 # a quick try

Two throw-away repositories under a temporary folder (git init + commit: DVC needs git):
- ours: a copy of this checkout (tests/conftest.py make_repo), params.yaml set to the matrix above;
- bare: the same params.yaml and dvc.yaml with every `cmd` replaced by `true` (same stage names,
  foreach/matrix, deps, outs and params keys), and a generated Snakefile with one rule per dvc.yaml
  stage, the same wildcards, inputs, outputs and number of params, trivial shell commands, and no
  r2kd code at parse time (no stamps, no validation, no align_with_dvc): the DAG's inputs come from
  a JSON table written here.
Measured in each, alternating ours / bare, ``--repeat`` times:
1. `snakemake -n --cores 2` with nothing built;
2. `dvc commit --force` with every stage's outputs present (small random placeholder files at every
   out path, plus the deps nothing makes), once (it writes dvc.lock: the first one is the figure);
3. `dvc status` with all of it recorded;
4. `snakemake -n --cores 2` with all of it built and recorded (ours reads dvc.lock at parse time:
   r2kd/handoff.py align_with_dvc), and the share of align_with_dvc alone (ours).
Wall and CPU (user + sys of the child processes) seconds; medians over the repeats.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import env, make_repo  # noqa: E402

METHODS = ["ce", "kd", "dist", "dkd", "r2kd"]


def override(seeds: int) -> dict:
    return {"pairs": {"resnet14-resnet8": {"teacher": "resnet14", "student": "resnet8"},
                      "resnet14-wrn_16_1": {"teacher": "resnet14", "student": "wrn_16_1"}},
            "methods": METHODS, "augments": ["default"], "seeds": list(range(seeds)), "cohort_seeds": []}


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, subprocess.CompletedProcess]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        raise SystemExit(f"{cmd} failed in {cwd} ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return wall, cpu, result


# ---------------------------------------------------------------------------------------------- bare


def bare_snakefile(root: Path) -> None:
    """A Snakefile with one rule per dvc.yaml stage: the same wildcards, inputs, outputs, number of
    params; inputs looked up in a JSON table (written here from DVC's expansion)."""
    sys.path.insert(0, str(REPO))
    from tests.dvc_stages import load_stages, upstream_outputs

    spec = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    stages = load_stages(root)
    dir_outs = [out for stage in stages for out in stage.outs if not Path(root, out).suffix]
    dir_outs = [out for out in dir_outs if any(o.startswith(out + "/") for s in stages for d in s.deps for o in [d])]

    def snake_dep(dep: str) -> list[str]:
        inside = [d for d in dir_outs if dep.startswith(d + "/")]
        if inside:
            return inside
        return upstream_outputs(dep, stages)

    table: dict[str, dict] = {}
    for stage in stages:
        table.setdefault(stage.group, {})[stage.name] = sorted({p for d in stage.deps for p in snake_dep(d)})
    (root / "bare_dag.json").write_text(json.dumps(table))

    def pattern(text: str) -> str:
        return re.sub(r"\$\{(?:item\.)?(\w+)\}", r"{\1}", text)

    lines = ["import json", "", 'BARE = json.load(open("bare_dag.json"))', "",
             "wildcard_constraints:", '    key="[A-Za-z0-9_-]+",', '    pair="[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*",',
             '    method="[a-z0-9_]+",', '    augment="[a-z0-9_]+",', '    seed="0|[1-9][0-9]*",', ""]
    report_outs = []
    for group, body in spec.items():
        do = body.get("do", body)
        outs = [next(iter(o)) if isinstance(o, dict) else o for kind in ("outs", "metrics") for o in do.get(kind, [])]
        if "matrix" in body:
            order = list(body["matrix"])
            name = f'"{group}@" + "-".join(str(w[k]) for k in {order!r})'
        elif "foreach" in body:
            name = f'"{group}@" + w.key'
        else:
            name = f'"{group}"'
        outputs = []
        for out in outs:
            out_pattern = pattern(out)
            is_dir = not Path(out_pattern).suffix  # runs/pairs/<pair>, runs/export
            outputs.append(f'directory("{out_pattern}")' if is_dir else f'"{out_pattern}"')
        n_params = len(do.get("params", []))
        lines += [f"rule {group}:",
                  f"    input: lambda w: BARE[{group!r}][{name}]",
                  "    output: " + ", ".join(outputs)]
        if n_params:
            lines.append("    params: " + ", ".join(f"p{i}=lambda w: {name}" for i in range(n_params)))
        lines += ['    shell: "touch {output}"', ""]
        if group == "report":
            report_outs = [pattern(o) for o in outs]
    lines = lines[:11] + ["rule all:", f"    input: {report_outs!r}", "    default_target: True", ""] + lines[11:]
    (root / "Snakefile").write_text("\n".join(lines))


def make_bare(dest: Path, ours: Path) -> Path:
    dest.mkdir(parents=True)
    for rel in ("params.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore", "workflow/scripts/r2kd"):
        if (ours / rel).exists():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ours / rel, dest / rel)
    shutil.copytree(ours / "r2kd", dest / "r2kd")  # a dep of `check`, as data
    spec = yaml.safe_load((ours / "dvc.yaml").read_text())
    for body in spec["stages"].values():
        (body["do"] if "do" in body else body)["cmd"] = "true"
    (dest / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (dest / ".venv").symlink_to((ours / ".venv").resolve(), target_is_directory=True)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    bare_snakefile(dest)
    for cmd in (["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


# --------------------------------------------------------------------------------------- placeholders


def placeholder(path: Path) -> None:
    """64 random bytes, as text (DVC reads metrics.json as JSON)."""
    noise = os.urandom(32).hex()
    path.write_text(json.dumps({"placeholder": noise}) if path.suffix == ".json" else noise)


def fill(root: Path) -> int:
    """Small random bytes at every out path of every stage that is not there yet, and at every dep nothing
    makes."""
    from tests.dvc_stages import load_stages

    stages = load_stages(root)
    made = 0
    for stage in stages:
        for out in stage.outs:
            path = root / out
            if path.suffix and not path.exists():  # a file (not one `check` wrote already)
                path.parent.mkdir(parents=True, exist_ok=True)
                placeholder(path)
                made += 1
            elif not path.suffix:  # a folder output: runs/pairs/<pair>/ (one pin per method), runs/export
                path.mkdir(parents=True, exist_ok=True)
                for name in [f"{m}.json" for m in METHODS] + ["record.json"]:
                    placeholder(path / name)
                    made += 1
    for stage in stages:
        for dep in stage.deps:
            path = root / dep
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                placeholder(path)
                made += 1
    return made


def data_root(root: Path) -> None:
    raw = root / yaml.safe_load((root / "params.yaml").read_text())["data"]["root"]
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "placeholder.bin").write_bytes(b"x" * 64)


# ------------------------------------------------------------------------------------------------ main


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{datetime.datetime.now().isoformat(timespec='seconds')}  {platform.node()}  nproc={os.cpu_count()}  "
            f"{model}  python {platform.python_version()}  load average {load}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the repos here and keep them (default: a temp folder)")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args()

    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    top = args.keep or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    if args.keep and top.exists():
        shutil.rmtree(top)
    top.mkdir(parents=True, exist_ok=True)
    say(f"bench_scale: {machine()}")
    ours = make_repo(top / "ours", override(args.seeds))
    bare = make_bare(top / "bare", ours)
    for root in (ours, bare):
        data_root(root)
    n_runs = 2 * len(METHODS) * args.seeds
    say(f"{n_runs} student runs (2 pairs x {len(METHODS)} methods x 1 augment x {args.seeds} seeds); repos in {top}")

    results: dict[tuple[str, str], list[tuple[float, float]]] = {}

    def measure(label: str, cmd: list[str], repeat: int) -> None:
        for i in range(repeat):
            for name, root in (("ours", ours), ("bare", bare)):
                wall, cpu, result = timed(cmd, root)
                results.setdefault((label, name), []).append((wall, cpu))
                jobs = re.search(r"^total\s+(\d+)", result.stdout + result.stderr, re.M)
                say(f"  {label:<34} {name}  try {i + 1}: {wall:6.2f} s wall  {cpu:6.2f} s CPU  "
                    f"(load {os.getloadavg()[0]:.2f}){f'  {jobs[1]} jobs' if jobs else ''}")

    snake = [".venv/bin/snakemake", "-n", "--cores", "2"]
    measure("snakemake -n (nothing built)", snake, args.repeat)
    # ours: first the code stamps `check` writes, as in a real run (a placeholder lists no real source,
    # which align_with_dvc reads as code changed since the stamp: every stage stale to it)
    subprocess.run(["workflow/scripts/r2kd", "check", "--stamp"], cwd=ours, env=env(), check=True, capture_output=True)
    for name, root in (("ours", ours), ("bare", bare)):
        shutil.rmtree(root / ".snakemake", ignore_errors=True)
        say(f"  placeholders in {name}: {fill(root)} files")
    measure("dvc commit --force (all stages)", [".venv/bin/dvc", "commit", "--force", "--quiet"], 1)
    for name, root in (("ours", ours), ("bare", bare)):
        say(f"  dvc.lock {name}: {(root / 'dvc.lock').stat().st_size / 1e6:.2f} MB")
    measure("dvc status (all recorded)", [".venv/bin/dvc", "status", "--quiet"], args.repeat)
    measure("snakemake -n (all built+recorded)", snake, args.repeat)
    align = [".venv/bin/python", "-c", "import time; from r2kd import handoff; t = time.perf_counter(); "
             "n = handoff.align_with_dvc(); print(f'{time.perf_counter() - t:.3f} {n}')"]
    shares = []
    for _ in range(args.repeat):
        wall, cpu, result = timed(align, ours)
        shares.append(float(result.stdout.split()[0]))
    say(f"  handoff.align_with_dvc() alone in ours (all built+recorded): median {statistics.median(shares):.3f} s "
        f"({', '.join(f'{s:.3f}' for s in shares)})")

    say("")
    say(f"{'measure (median wall / CPU s)':<36}{'ours':>16}{'bare':>16}{'ours/bare':>11}")
    for label in dict.fromkeys(label for label, _ in results):
        o, b = results[(label, "ours")], results[(label, "bare")]
        ow, oc = statistics.median(w for w, _ in o), statistics.median(c for _, c in o)
        bw, bc = statistics.median(w for w, _ in b), statistics.median(c for _, c in b)
        say(f"{label:<36}{ow:>8.2f}/{oc:>6.2f}{bw:>9.2f}/{bc:>6.2f}{ow / bw:>10.2f}x")
    say("")
    say(f"goals: snakemake -n (nothing built) <= 5 s; dvc status <= 1.5x bare   (load average now "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as handle:
            handle.write("\n".join(lines) + "\n\n")
    if not args.keep:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
