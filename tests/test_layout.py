"""Module layout rules from issue 13: one concept in one place, no stdlib names shadowed."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

from conftest import REPO, env


def package_modules(package) -> set[str]:
    # Listed from the package's own directory: an editable install elsewhere may still map old names.
    return {m.name for m in pkgutil.iter_modules(package.__path__)}


def test_no_module_shadows_the_stdlib_io():
    import r2kd
    from r2kd import files

    assert "io" not in package_modules(r2kd) and "files" in package_modules(r2kd)

    for name in ("atomic_path", "write_bytes", "write_text", "write_json", "read_json", "save_checkpoint",
                 "load_checkpoint", "sha256_file", "sha256_state_dict"):
        assert callable(getattr(files, name)), name


def test_training_stages_import_the_prepared_reader_not_the_dataset_parsers():
    # A fresh interpreter: this test process has imported the parsers already.
    code = (
        "import sys\n"
        "import r2kd.stages.distill, r2kd.stages.train_teacher, r2kd.stages.prune, r2kd.stages.evaluate\n"
        "assert 'r2kd.data.prepared' in sys.modules\n"
        "print(sorted(m for m in sys.modules if m.startswith('r2kd.data.datasets') or m == 'r2kd.data.write'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_no_module_imports_itself_through_others():
    """Every import anywhere in a module (function-level ones too, relative ones resolved) is an edge
    from the module to what it names; the package's import graph has no cycle."""
    from closure import ROOT, imports_of, module_file

    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (ROOT / "r2kd").rglob("*.py")}
    graph = {name: {m for m in imports_of(path) if module_file(m) is not None and m != name}
             for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph.get(name, ())):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
