"""Nothing from params.yaml reaches a shell or a path before it is validated (issue 14, item 1).

The three reproductions of the report, against a checkout whose data and teacher are already built
(so that, without the `check` stage, DVC would reach the student stage whose command and outputs
interpolate the malicious values): a student name that ends the command and runs another, a seed
that does the same through `dvc exp run -S`, and a seed whose path climbs out of the repository so
that DVC would delete files there. Each must stop at `check`, name the key, and touch nothing.
"""

from __future__ import annotations

import pytest
import yaml

from conftest import copy_repo, run

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def built(tmp_path_factory, built_checkouts):
    """A copy of the session's DVC-built checkout (data, teacher and students made), committed."""
    repo = copy_repo(built_checkouts[0], tmp_path_factory.mktemp("security") / "repo")
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "built"], repo)
    return repo


def _with(repo, change) -> str:
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    change(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return original


def test_a_student_name_cannot_run_a_command(built):
    original = _with(built, lambda p: p["pairs"].update(
        {"resnet14-resnet8": {"teacher": "resnet14", "student": "resnet8 ce default 0; touch PWNED #"}}))
    try:
        result = run(["dvc", "repro"], built, check=False)
        assert result.returncode != 0
        assert not (built / "PWNED").exists()
        assert "pairs.resnet14-resnet8.student" in result.stdout + result.stderr
        assert "Running stage 'distill@" not in result.stdout
    finally:
        (built / "params.yaml").write_text(original)


def test_a_pair_id_cannot_run_a_command(built):
    original = _with(built, lambda p: p.update(pairs={"x; touch PWNED #": {"teacher": "resnet14", "student": "resnet8"}}))
    try:
        result = run(["dvc", "repro"], built, check=False)
        assert result.returncode != 0 and not (built / "PWNED").exists()
        assert "pair id" in result.stdout + result.stderr
    finally:
        (built / "params.yaml").write_text(original)


def test_exp_run_set_cannot_run_a_command(built):
    result = run(["dvc", "exp", "run", "-S", 'seeds=["0; touch PWNED #"]'], built, check=False)
    assert result.returncode != 0
    assert not (built / "PWNED").exists()
    assert "seeds" in result.stdout + result.stderr
    run(["git", "checkout", "--", "params.yaml"], built)


def test_a_seed_cannot_make_dvc_delete_files_outside_its_outputs(built, tmp_path):
    victim = built.parent / "victim"
    victim.mkdir(exist_ok=True)
    for name in ("model.pt", "metrics.json", "log.csv", "provenance.json"):
        (victim / name).write_text("precious")
    # one student stage, so that one stage's outputs are the victim's (several would overlap, which
    # DVC refuses on its own before anything runs)
    original = _with(built, lambda p: p.update(seeds=["0/../../../../../../victim"], methods=["ce"],
                                               pairs={"resnet14-resnet8": p["pairs"]["resnet14-resnet8"]}))
    try:
        result = run(["dvc", "repro"], built, check=False)
        assert result.returncode != 0
        assert all((victim / n).read_text() == "precious" for n in ("model.pt", "metrics.json", "log.csv", "provenance.json"))
        assert "seeds" in result.stdout + result.stderr
    finally:
        (built / "params.yaml").write_text(original)


def test_snakemake_refuses_the_same_values_when_it_parses(built):
    original = _with(built, lambda p: p.update(seeds=["0; touch PWNED #"]))
    try:
        result = run(["snakemake", "--cores", "1"], built, check=False)
        assert result.returncode != 0 and not (built / "PWNED").exists()
        assert "seeds" in result.stdout + result.stderr
    finally:
        (built / "params.yaml").write_text(original)
