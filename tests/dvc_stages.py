"""The pipeline DAG as DVC resolves it (dvc.yaml + params.yaml, through DVC's own resolver).

The Snakemake rules (workflow/rules/) are written by hand; tests/test_dag.py compares Snakemake's
jobs with these stages (commands, inputs, outputs, params keys), so the two DAGs cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Stage:
    name: str  # DVC's address, e.g. "distill@wrn_16_2-resnet8-kd-default-0"
    group: str  # the dvc.yaml stage it was expanded from, e.g. "distill"
    cmd: str
    deps: tuple[str, ...]  # paths (files or directories), relative to the repository root
    outs: tuple[str, ...]  # every output, metrics and plots included
    params: dict[str, Any]  # the params.yaml values this stage declares, as written there


def load_stages(root: str | Path = ".") -> list[Stage]:
    """Every stage of dvc.yaml, expanded for the current params.yaml."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    root = Path(root).resolve()
    stages = []
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            deps, params = [], {}
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    params.update(dep.read_params())
                else:
                    deps.append(_rel(dep.def_path, stage, root))
            outs = [_rel(out.def_path, stage, root) for out in stage.outs]
            cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
            stages.append(
                Stage(
                    name=stage.name,
                    group=stage.name.split("@")[0],
                    cmd=cmd,
                    deps=tuple(deps),
                    outs=tuple(outs),
                    params=params,
                )
            )
    return stages


def _rel(path: str, stage: Any, root: Path) -> str:
    full = (Path(stage.wdir) / path).resolve()
    return full.relative_to(root).as_posix()


def upstream_outputs(dep: str, stages: list[Stage]) -> list[str]:
    """The outputs a dependency path stands for: itself, or every output inside a dep directory.

    DVC accepts a directory dep that contains other stages' outputs; Snakemake needs the files.
    """
    outs = [out for stage in stages for out in stage.outs]
    if dep in outs:
        return [dep]
    inside = [out for out in outs if out.startswith(dep.rstrip("/") + "/")]
    return inside or [dep]
