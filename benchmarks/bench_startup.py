"""Planning start-up: a no-op `dvc repro` and `snakemake -n` on a finished pipeline, and the cost of
one stage process before its work starts, each against a baseline measured in the same run.

    python benchmarks/bench_startup.py                 # the repo's params.yaml (the embedded default)
    python benchmarks/bench_startup.py --repeats 9

What it does, in a temporary copy of this checkout (tracked files only, the running environment
linked as .venv, git initialised, so DVC sees what a fresh clone sees):

1. `dvc repro` once: the whole pipeline, timed (that is `make run` without `r2kd check`/`show`);
2. a no-op `dvc repro`, ``--repeats`` times (median);
3. the baseline: a second copy whose dvc.yaml lists every stage's source files as deps (the layout
   before r2kd/stagecode.py: ~1,000 entries in dvc.lock for the default matrix), made up to date
   with `dvc commit` on the same outputs (nothing reruns), then its no-op `dvc repro`, interleaved;
4. `snakemake -n` on the finished copy (Snakemake re-plans from file dates and its stamps);
5. one stage process's start-up: `python -c "import r2kd.stages.distill"`, against `import torch`;
6. DVC's YAML loader: a no-op `dvc repro` and DVC's per-stage bookkeeping (`dvc commit -f` of one
   stage: hash its files, rewrite dvc.lock, as after every stage it runs) with ruamel.yaml's C loader
   (ruamel.yaml.clib, a dependency since 2026-11-27) against the same commands with it blocked
   (pure-Python parsing, what pip installs for ruamel.yaml >= 0.19 without it), interleaved.

Prints a rich table and the ratios; nothing here is a unit test.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from r2kd.stagecode import STAGE_CODE  # noqa: E402


def load_params(root: Path) -> dict:
    import yaml

    return yaml.safe_load((root / "params.yaml").read_text())

BIN = Path(sys.executable).parent
GENERATED = ("data/prepared/", "runs/", "reports/", "dvc.lock", ".r2kd/", "logs/", ".snakemake/")


def copy_checkout(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for rel in files:
        if rel and (REPO / rel).is_file() and not rel.startswith(GENERATED):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return as_fresh_clone(dest)


def as_fresh_clone(dest: Path, message: str = "bench") -> Path:
    """``dest``'s files committed in a new git repository, the running environment linked as .venv:
    what a fresh clone with its environment installed sees."""
    (dest / ".venv").symlink_to(BIN.parent, target_is_directory=True)
    git = ["git", "-c", "user.email=b@b", "-c", "user.name=bench"]
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], [*git, "commit", "-qm", message]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


def per_file_dvc_yaml(text: str) -> str:
    """dvc.yaml with each stage's code stamp dep replaced by the stamp's source files (the old layout);
    `check` still writes the stamps, which nothing reads then."""
    lines, stage = [], None
    for line in text.splitlines():
        top = re.match(r"^  (\w+):\s*$", line)
        stage = top.group(1) if top else stage
        dep = re.match(r"^(\s+)- runs/code/(\w+)\.json$", line)
        if dep and stage != "check":
            lines.extend(f"{dep.group(1)}- {entry}" for entry in STAGE_CODE[dep.group(2)])
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(Path.home())})
    return time.perf_counter() - start


# DVC without ruamel.yaml's C loader: the import that ruamel.yaml.main tries fails, so it falls back
# to its pure-Python parser, as in an environment without ruamel.yaml.clib.
PURE_YAML_DVC = "import sys; sys.modules['_ruamel_yaml'] = None; from dvc.cli import main; sys.exit(main(sys.argv[1:]))"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="r2kd-startup-") as tmp:
        new = copy_checkout(Path(tmp, "stamps"))
        console.print(f"full `dvc repro` in {new} ...")
        full_run = timed([str(BIN / "dvc"), "repro"], new)

        old = copy_checkout(Path(tmp, "per-file"))
        (old / "dvc.yaml").write_text(per_file_dvc_yaml((old / "dvc.yaml").read_text()))
        for generated in ("data", "runs", "reports", ".r2kd"):
            shutil.copytree(new / generated, old / generated, symlinks=True, dirs_exist_ok=True)
        subprocess.run([str(BIN / "dvc"), "commit", "-f", "-q"], cwd=old, check=True, capture_output=True)
        sizes = {name: (root / "dvc.lock").stat().st_size for name, root in (("stamps", new), ("per-file", old))}

        one_stage = ["commit", "-f", "-q", "prune@" + next(iter(load_params(new)["teachers"]))]
        pure = [str(BIN / "python"), "-c", PURE_YAML_DVC]
        dvc_new, dvc_old, smk, stage, torch_only = [], [], [], [], []
        dvc_pure, commit_c, commit_pure = [], [], []
        for _ in range(args.repeats):  # interleaved, so load drift hits both sides alike
            dvc_new.append(timed([str(BIN / "dvc"), "repro"], new))
            dvc_old.append(timed([str(BIN / "dvc"), "repro"], old))
            dvc_pure.append(timed([*pure, "repro"], new))
            commit_c.append(timed([str(BIN / "dvc"), *one_stage], new))
            commit_pure.append(timed([*pure, *one_stage], new))
            smk.append(timed([str(BIN / "snakemake"), "-n", "--cores", "1"], new))
            stage.append(timed([str(BIN / "python"), "-c", "import r2kd.stages.distill"], new))
            torch_only.append(timed([str(BIN / "python"), "-c", "import torch"], new))

    med = statistics.median
    table = Table(title=f"planning start-up, median of {args.repeats} (full dvc repro once: {full_run:.1f} s)")
    for col in ("measurement", "seconds", "baseline", "seconds", "ratio"):
        table.add_column(col, justify="right" if col in ("seconds", "ratio") else "left")
    table.add_row("no-op dvc repro, code stamps", f"{med(dvc_new):.2f}", "per-file code deps",
                  f"{med(dvc_old):.2f}", f"{med(dvc_old) / med(dvc_new):.2f}x faster")
    table.add_row("no-op dvc repro, C YAML loader", f"{med(dvc_new):.2f}", "pure-Python YAML",
                  f"{med(dvc_pure):.2f}", f"{med(dvc_pure) / med(dvc_new):.2f}x faster")
    table.add_row("one stage's dvc.lock update (dvc commit -f), C loader", f"{med(commit_c):.2f}",
                  "pure-Python YAML", f"{med(commit_pure):.2f}", f"-{med(commit_pure) - med(commit_c):.2f} s per stage")
    table.add_row("no-op snakemake -n", f"{med(smk):.2f}", "target", "1.50", f"{med(smk) / 1.5:.2f} of it")
    table.add_row("stage start-up: import r2kd.stages.distill", f"{med(stage):.2f}", "import torch",
                  f"{med(torch_only):.2f}", f"+{med(stage) - med(torch_only):.2f} s")
    console.print(table)
    console.print(f"dvc.lock: {sizes['stamps']:,} B with code stamps, {sizes['per-file']:,} B with per-file deps "
                  f"({sizes['per-file'] / sizes['stamps']:.1f}x)")


if __name__ == "__main__":
    main()
