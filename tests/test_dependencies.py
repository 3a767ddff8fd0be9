"""One set of dependencies: pyproject.toml, constraints.txt and workflow/envs/r2kd.yaml agree, every
third-party import of r2kd/ is pinned, and the library core imports without the pipeline tools."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# pyproject's `pipeline` extra minus these is what the stages import; these run the stages instead
ORCHESTRATORS = {"dvc", "snakemake", "ruamel-yaml-clib"}
# what the library core (docs/library.md) must import without
PIPELINE_TOOLS = ("dvc", "snakemake", "ruamel", "onnx", "onnxruntime", "onnxscript", "sklearn", "matplotlib")


def canon(name: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    return canon(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec).group(1))


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pins() -> dict[str, str]:
    found = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            found[canon(name)] = version.strip()
    return found


def conda_pip() -> dict[str, str]:
    env = yaml.safe_load((REPO / "workflow/envs/r2kd.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    found = {}
    for spec in pip:
        name, _, version = spec.partition("==")
        assert version, f"workflow/envs/r2kd.yaml: pin {spec!r} exactly (name==version, as constraints.txt)"
        found[canon(name)] = version
    return found


def test_conda_env_matches_pyproject_and_constraints():
    proj = project()
    extras = proj["optional-dependencies"]
    wanted = {requirement_name(s) for s in proj["dependencies"] + extras["export"] + extras["pipeline"]}
    env = conda_pip()
    assert set(env) == wanted - ORCHESTRATORS
    assert {name: version for name, version in env.items() if pins().get(name) != version} == {}, \
        "workflow/envs/r2kd.yaml pins differ from constraints.txt"


def test_every_declared_dependency_is_pinned():
    proj = project()
    declared = {requirement_name(s) for group in [proj["dependencies"], *proj["optional-dependencies"].values()]
                for s in group}
    assert declared - set(pins()) == set()


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module name -> files of r2kd/ importing it (any depth, lazy imports included)."""
    found: dict[str, set[str]] = {}
    for path in (REPO / "r2kd").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "r2kd" and top not in sys.stdlib_module_names and top != "__future__":
                    found.setdefault(top, set()).add(path.relative_to(REPO).as_posix())
    return found


def test_every_import_maps_to_a_pinned_declared_distribution():
    imports = third_party_imports()
    assert {"torch", "numpy", "onnx", "onnxruntime"} <= set(imports)  # the walk sees lazy imports too
    dists = packages_distributions()
    pinned = set(pins())
    proj = project()
    declared = {requirement_name(s) for group in [proj["dependencies"], *proj["optional-dependencies"].values()]
                for s in group}
    unpinned, undeclared = {}, {}
    for module, files in imports.items():
        names = {canon(d) for d in dists.get(module, [])}
        assert names, f"{module} (imported by {sorted(files)}) is not installed"
        if not names & pinned:
            unpinned[module] = sorted(files)
        if not names & declared:
            undeclared[module] = sorted(files)
    assert unpinned == {}, "pin these in constraints.txt"
    assert undeclared == {}, "declare these in pyproject.toml"


# Prepended to a script: the pipeline tools look uninstalled (`import dvc` raises ModuleNotFoundError
# and importlib.util.find_spec("dvc") answers None, as torch's optional-module probes expect).
BLOCKER = textwrap.dedent(f"""
    import sys
    for _name in {PIPELINE_TOOLS!r}:
        sys.modules[_name] = None
    def _pipeline_modules_loaded():
        return sorted(m for m, mod in sys.modules.items() if m.split(".")[0] in {PIPELINE_TOOLS!r} and mod is not None)
""")


def test_library_core_imports_without_pipeline_tools():
    code = BLOCKER + textwrap.dedent("""
        import r2kd.methods, r2kd.augment, r2kd.pruning, r2kd.models, r2kd.config, r2kd.corruptions
        from r2kd.methods import make_method
        from r2kd.pruning import prune_teacher
        try:
            import dvc
        except ModuleNotFoundError:
            pass
        else:
            raise AssertionError("the blocker let dvc through")
        assert not _pipeline_modules_loaded(), _pipeline_modules_loaded()
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
