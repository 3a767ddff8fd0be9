"""params.yaml survives `dvc exp run -S`: DVC's own rewrite (dvc.utils.hydra.apply_overrides, what
`exp run -S/--set-param` calls on params.yaml) changes only the line of the key that changed, for
every key of params.yaml and of every preset (`r2kd preset NAME` makes a preset the params.yaml)."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
hydra = pytest.importorskip("dvc.utils.hydra", reason="needs dvc (the pipeline extra)")
FILES = [REPO / "params.yaml", *sorted((REPO / "r2kd/presets").glob("*.yaml"))]


def leaves(data, prefix=()):
    """(key path, value) of every scalar and list of params.yaml."""
    for key, value in data.items():
        if isinstance(value, dict):
            yield from leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def changed(value):
    """A different value of the same kind, in Hydra's override syntax."""
    if isinstance(value, bool):
        return str(not value).lower()
    if isinstance(value, int):
        return str(value + 1)
    if isinstance(value, float):
        return repr(value * 2)
    if value is None:
        return "7"
    if isinstance(value, str):
        return "zzz"
    assert isinstance(value, list) and value, value
    return "[" + ",".join([changed(value[0]), *map(str, value[1:])]) + "]"


def rewrite(tmp_path: Path, override: str, source: Path = REPO / "params.yaml") -> tuple[list[str], list[str]]:
    path = tmp_path / "params.yaml"
    shutil.copy(source, path)
    hydra.apply_overrides(path, [override])
    return source.read_text().splitlines(), path.read_text().splitlines()


def one_line_changed(before: list[str], after: list[str]) -> bool:
    ops = [op for op in difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes() if op[0] != "equal"]
    return len(ops) == 1 and ops[0][0] == "replace" and ops[0][2] - ops[0][1] == 1 and ops[0][4] - ops[0][3] == 1


def test_exp_run_set_param_changes_one_line(tmp_path):
    before, after = rewrite(tmp_path, "distill.lr=0.02")
    assert one_line_changed(before, after), "\n".join(difflib.unified_diff(before, after, lineterm=""))
    assert [line for line in after if line not in before] == ["  lr: 0.02"]


@pytest.mark.parametrize("source", FILES, ids=lambda p: p.stem)
def test_every_key_survives_the_rewrite(tmp_path, source):
    data = yaml.safe_load(source.read_text())
    bad = {}
    for path, value in leaves(data):
        if value == []:  # `key: []` given items becomes `key:` and item lines
            continue
        override = ".".join(path) + "=" + changed(value)
        before, after = rewrite(tmp_path, override, source)
        if not one_line_changed(before, after):
            bad[override] = "\n".join(difflib.unified_diff(before, after, lineterm="", n=0))
    assert not bad, "\n\n".join(f"{k}:\n{v}" for k, v in bad.items())


@pytest.mark.parametrize("source", FILES, ids=lambda p: p.stem)
def test_unchanged_rewrite_is_a_no_op(tmp_path, source):
    lr = yaml.safe_load(source.read_text())["distill"]["lr"]
    before, after = rewrite(tmp_path, f"distill.lr={lr}", source)  # the value it already has
    assert before == after, "\n".join(difflib.unified_diff(before, after, lineterm="", n=0))
