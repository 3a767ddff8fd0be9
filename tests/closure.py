"""The r2kd source files a stage can import: every `import` anywhere in a module (lazy ones too),
followed through the package. Used to check that each stage's code deps cover what it runs."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    base = ROOT / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(path: Path, module_level_only: bool = False) -> set[str]:
    found: set[str] = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name == "__init__.py":
        package = package.removesuffix(".__init__")
    else:
        package = package.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    for node in (tree.body if module_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "r2kd" or name.startswith("r2kd.")}


def closure(*modules: str) -> set[str]:
    """Repository-relative paths of every r2kd file reachable from ``modules``, packages' __init__ included."""
    todo, seen = list(modules), set()
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            f = module_file(".".join(parts[:i]))
            if f is not None and f not in files:
                files.add(f)
                # the CLI imports each subcommand's code lazily: only what it imports at the top is shared
                todo.extend(imports_of(f, module_level_only=f == ROOT / "r2kd" / "cli.py"))
    return {f.relative_to(ROOT).as_posix() for f in files}


CLI = ["r2kd.__main__", "r2kd.cli", "r2kd.config"]  # what every stage command runs before its own code
STAGE_MODULES = {
    "check": ["r2kd.runs", "r2kd.files"],
    "prepare": ["r2kd.stages.prepare"],
    "train_teacher": ["r2kd.stages.train_teacher"],
    "prune": ["r2kd.stages.prune"],
    "pair": ["r2kd.stages.pair"],
    "pair_pruned": ["r2kd.stages.pair_pruned"],
    "distill": ["r2kd.stages.distill"],
    "distill_cohort": ["r2kd.stages.distill_cohort"],
    "corrupt": ["r2kd.stages.corrupt"],
    "evaluate": ["r2kd.stages.evaluate"],
    "export": ["r2kd.stages.export"],
    "report": ["r2kd.stages.report"],
}


def stage_closure(group: str) -> set[str]:
    return closure(*CLI, *STAGE_MODULES[group])
