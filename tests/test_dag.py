"""DVC and Snakemake must run the same DAG: same stages, commands, inputs and outputs.

DVC's side comes from DVC's own resolver (dvc.yaml + params.yaml); Snakemake's from
`snakemake --dry-run --forceall --printshellcmds`, parsed. Jobs are matched by their outputs. The only
deliberate difference: DVC's DAG starts with a `check` stage (Snakemake validates params.yaml when it
parses the workflow, before any job), and Snakemake's commands send their output to a log file.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import yaml

from closure import CLI, STAGE_MODULES, closure, stage_closure
from conftest import REPO, make_repo, run
from r2kd import paths
from r2kd.config import load_params
from dvc_stages import load_stages, upstream_outputs
from r2kd.runs import student_runs
from r2kd.pipeline import METHODS as METHOD_SPECS
from r2kd.pipeline import CHECK_CMD
from r2kd.pipeline import STAGES as STAGE_TABLE
from r2kd.pipeline import code_name
from r2kd.stagecode import STAGE_CODE, code_files

LOG_REDIRECT = re.compile(r"\s*>\s*logs/\S+\s+2>&1\s*$")


def snakemake_jobs(root) -> list[dict]:
    out = run(["snakemake", "--dry-run", "--forceall", "--printshellcmds", "--cores", "1"], root).stdout
    jobs: list[dict] = []
    for line in out.splitlines():
        match = re.match(r"^(?:local)?rule (\S+):$", line)
        if match:
            jobs.append({"rule": match.group(1), "input": [], "output": [], "cmd": None})
            continue
        if not jobs:
            continue
        stripped = line.strip()
        for key in ("input", "output"):
            if stripped.startswith(f"{key}: "):
                jobs[-1][key] = [p.strip() for p in stripped[len(key) + 2:].split(",")]
        if stripped.startswith("Shell command: "):
            jobs[-1]["cmd"] = LOG_REDIRECT.sub("", stripped[len("Shell command: "):])
    return jobs


def expand_dep(dep: str, stages, root: Path) -> list[str]:
    """What a DVC dep stands for as files: outputs of other stages inside it, or source files."""
    if dep == str(paths.CHECKED) or dep == "params.yaml":
        return []  # DVC's validation gate; Snakemake validates at parse time
    if dep == load_params(root / "params.yaml").data.root:
        return []  # the user's data: Snakemake's rule reads an index of it (checked below)
    if dep.startswith(str(paths.CODE_STAMPS) + "/"):
        # DVC's code stamp stands for the stage's source files (a cohort's: with the listed methods')
        return code_files(Path(dep).stem, root, load_params(root / "params.yaml").methods)
    inside = upstream_outputs(dep, stages)
    if inside != [dep]:
        return inside
    full = root / dep
    if full.is_dir():
        return sorted(str(p.relative_to(root)) for p in full.rglob("*.py"))
    return [dep]


def contains(resolved, raw) -> bool:
    """``raw`` (as written in params.yaml) is ``resolved`` (validated, defaults filled) minus defaults."""
    if isinstance(raw, dict):
        return isinstance(resolved, dict) and all(k in resolved and contains(resolved[k], v) for k, v in raw.items())
    return resolved == raw


def assert_same_dag(root: Path) -> None:
    stages = [s for s in load_stages(root) if s.group != "check"]
    # a DVC directory out (pair_pruned's runs/pairs/<pair>) is, for Snakemake, the files in it
    dirs = [out for s in stages for out in s.outs if (root / out).suffix == ""]
    jobs = {tuple(sorted({next((d for d in dirs if p.startswith(d + "/")), p) for p in job["output"]})): job
            for job in snakemake_jobs(root) if job["rule"] != "all"}
    assert len(jobs) == len(stages)
    for stage in stages:
        job = jobs.get(tuple(sorted(stage.outs)))
        assert job is not None, f"no Snakemake job writes the outputs of {stage.name}: {stage.outs}"
        assert job["rule"] == stage.group, stage.name
        expected = {p for dep in stage.deps for p in expand_dep(dep, stages, root)}
        stamps = [p for p in job["input"] if p.startswith(".r2kd/snakemake/params/")]
        data_index = [p for p in job["input"] if p.startswith(".r2kd/data/")]
        assert bool(data_index) == (load_params(root / "params.yaml").data.root in stage.deps), stage.name
        # Snakemake's code inputs list the SHA-256 of each source file: the same files as DVC's deps
        # (the stage's stamp, and for a student its method's own files: DVC depends on them directly)
        code_stamps = [p for p in job["input"] if p.startswith(".r2kd/code/")]
        assert sorted(Path(p).stem for p in code_stamps) == sorted(
            [stage.group, *([f"method-{stage.name.split('-')[-3]}"] if stage.group == "distill" else [])]), stage.name
        code = {f for stamp in code_stamps for f in json.loads((root / stamp).read_text())}
        assert code <= expected, stage.name
        # a file inside a DVC directory out, as that folder (a cohort reads pair_pruned's whole folder)
        inputs = {next((d for d in dirs if p.startswith(d + "/")), p) for p in job["input"]}
        expected = {next((d for d in dirs if p.startswith(d + "/")), p) for p in expected - code}
        assert sorted(inputs - set(stamps) - set(code_stamps) - set(data_index)) == sorted(expected), stage.name
        assert all(not p.startswith(("r2kd/", "workflow/")) for p in expected), stage.name
        assert " ".join(job["cmd"].split()) == " ".join(stage.cmd.split()), stage.name
        # the same params.yaml keys decide when each tool reruns the stage (Snakemake sees them with
        # the schema's defaults filled in; DVC sees what the file says)
        assert len(stamps) == 1, stage.name
        seen = json.loads((root / stamps[0]).read_text())
        assert set(seen) == set(stage.params), stage.name
        assert contains(seen, stage.params), stage.name


@pytest.mark.slow
def test_default_dag_agrees(tmp_path):
    root = make_repo(tmp_path / "repo", override={}, git=True)
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())  # the default, untouched
    assert_same_dag(root)


@pytest.mark.slow
def test_changed_lists_dag_agrees(tmp_path):
    root = make_repo(tmp_path / "repo", override={
        "teachers": {"resnet14": {"checkpoint": None, "checkpoint_sha256": None},
                     "wrn_16_2": {"checkpoint": None, "checkpoint_sha256": None}},
        "pairs": {"r14-r8": {"teacher": "resnet14", "student": "resnet8"},
                  "w162-r8": {"teacher": "wrn_16_2", "student": "resnet8"},
                  "w162-w161": {"teacher": "wrn_16_2", "student": "wrn_16_1", "method_params": {"kd": {"temperature": 2.0}}}},
        "methods": ["kd", "dist", "r2kd"],
        "augments": ["default", "mixup"],
        "seeds": [3, 7],
        "cohort_seeds": [0, 5],
    })
    assert_same_dag(root)
    stages = load_stages(root)
    assert sum(s.group == "distill" for s in stages) == 3 * 3 * 2 * 2
    cohorts = {s.name: s.outs for s in stages if s.group == "distill_cohort"}
    assert list(cohorts["distill_cohort@w162-w161-5"]) == ["runs/students/w162-w161/s5"] and len(cohorts) == 3 * 2
    assert sum(s.group == "train_teacher" for s in stages) == 2  # each teacher once, shared by its pairs
    assert "distill@w162-w161-kd-mixup-7" in {s.name for s in stages}  # names from content


def test_stage_names_come_from_content_so_inserting_a_pair_renames_nothing(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    before = {s.name for s in load_stages(REPO) if s.group == "distill"}
    params["teachers"]["resnet56"] = {"checkpoint": None, "checkpoint_sha256": None}
    params["pairs"] = {"resnet56-resnet20": {"teacher": "resnet56", "student": "resnet20"}, **params["pairs"]}
    root = make_repo(tmp_path / "repo", override={}, git=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    after = {s.name for s in load_stages(root) if s.group == "distill"}
    assert before < after
    assert {r.stage for r in student_runs(load_params(REPO / "params.yaml"))} == before


def test_paths_module_matches_dvc_outputs():
    """r2kd/paths.py, r2kd/runs.py and dvc.yaml spell the same artefact paths and stage names."""
    params = load_params(REPO / "params.yaml")
    stages = load_stages(REPO)
    outs = {out for stage in stages for out in stage.outs}
    for arch in params.teachers:
        assert str(paths.teacher_dir(arch) / "model.pt") in outs
        assert str(paths.pruned_dir(arch) / "model.pt") in outs
    for key in params.pairs:
        assert str(paths.pair_file(key)) in outs
    names = {s.name for s in stages}
    for run_ in student_runs(params):
        assert run_.stage in names
        for name in ("model.pt", "metrics.json", "log.csv", "provenance.json"):
            assert str(run_.dir / name) in outs
    assert len({str(r.dir) for r in student_runs(params)}) == len(student_runs(params))  # no two runs share a path
    assert str(paths.CHECKED) in outs


def test_every_stage_depends_on_the_check_stage():
    for stage in load_stages(REPO):
        if stage.group != "check":
            assert str(paths.CHECKED) in stage.deps, stage.name


def test_every_declared_param_exists_and_is_read():
    """DVC fails on a params key missing from params.yaml; a typo would only show at `dvc repro`."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for stage in load_stages(REPO):
        for key in stage.params:
            node = raw
            for part in key.split("."):
                assert part in node, f"{stage.name}: params key {key} missing from params.yaml"
                node = node[part]


def test_student_key_does_not_touch_teacher_stages():
    for stage in load_stages(REPO):
        if stage.group in ("prepare", "train_teacher", "prune", "pair", "pair_pruned"):
            assert not any(k.startswith(("distill.", "method_params", "methods", "seeds")) or k == "distill"
                           for k in stage.params), stage.name


def test_settings_that_do_not_change_results_rerun_nothing():
    """runtime.workers (DataLoader processes) gives the same batches for any value (test_stream.py)."""
    for stage in load_stages(REPO):
        assert "runtime.workers" not in stage.params and "runtime" not in stage.params, stage.name


def test_results_changing_runtime_settings_are_tracked():
    """runtime.threads changes CPU results bit for bit, so every training stage must rerun on it."""
    for stage in load_stages(REPO):
        if stage.group in ("train_teacher", "prune", "distill", "evaluate"):
            assert "runtime.threads" in stage.params, stage.name


@pytest.mark.parametrize("group", sorted(set(STAGE_MODULES) - {"check"}))
def test_code_stamps_cover_each_stages_import_closure(group, tmp_path):
    """Every file a stage can import is in its code stamp, which is its one code dep in both tools."""
    root = make_repo(tmp_path / "repo", override={}) if group == "distill_cohort" else REPO  # TINY: a cohort seed
    stage = next(s for s in load_stages(root) if s.group == group)
    files = set(code_files(group, REPO))
    missing = sorted(f for f in stage_closure(group) if f not in files)
    assert not missing, f"{group}: r2kd/stagecode.py lacks {missing}"
    assert "workflow/scripts/r2kd" in files
    assert str(paths.code_stamp(group)) in stage.deps
    # code is a dep through the stamp, and a student's through its method's own files too (in no stamp)
    method = stage.name.split("-")[-3] if group == "distill" else None
    own = set(METHOD_SPECS[method].files) if method else set()
    assert {d for d in stage.deps if d.startswith(("r2kd", "workflow/"))} == own, stage.name
    assert not own & files, "a method's own files are in no stage's shared stamp"


@pytest.mark.parametrize("method", sorted(METHOD_SPECS))
def test_each_methods_students_run_the_shared_code_and_their_own_files(method):
    """A student's code is the shared distill code plus its method's files, and nothing of another
    method's: an edit of r2kd/methods/kd.py is the kd students' change alone."""
    files = set(code_files(code_name("distill", method), REPO))
    missing = sorted(f for f in closure(*CLI, *STAGE_MODULES["distill"], f"r2kd.methods.{method}") if f not in files)
    assert not missing, f"distill-{method}: r2kd/pipeline.py lacks {missing}"
    others = {f for m in METHOD_SPECS if m != method for f in METHOD_SPECS[m].files}
    assert not others & files
    assert not others & closure(*CLI, *STAGE_MODULES["distill"], f"r2kd.methods.{method}")


def test_check_stage_covers_all_code_and_writes_every_stamp():
    """`check` reruns on any source change (it depends on the whole tree) and rewrites the stamps."""
    check = next(s for s in load_stages(REPO) if s.group == "check")
    assert {"r2kd", "workflow/scripts/r2kd", "params.yaml"} <= set(check.deps)
    assert {str(paths.code_stamp(g)) for g in STAGE_CODE} <= set(check.outs)
    assert set(STAGE_CODE) == set(STAGE_MODULES) - {"check"}
    assert set(stage_closure("check")) <= {str(p.relative_to(REPO)) for p in (REPO / "r2kd").rglob("*.py")}


def test_code_stamp_changes_only_for_the_stages_that_run_the_edited_file(tmp_path):
    root = make_repo(tmp_path / "repo", override={}, git=False)
    run(["workflow/scripts/r2kd", "check", "--stamp"], root)
    before = {g: (root / paths.code_stamp(g)).read_text() for g in STAGE_CODE}
    assert json.loads(before["distill"])["r2kd/augment.py"]  # a digest per file
    with open(root / "r2kd/augment.py", "a") as fh:  # distill's code, no one else's
        fh.write("\n# edited\n")
    (root / "r2kd/models/resnet.py").touch()  # a touch is not an edit
    run(["workflow/scripts/r2kd", "check", "--stamp"], root)
    after = {g: (root / paths.code_stamp(g)).read_text() for g in STAGE_CODE}
    changed = sorted(g for g in STAGE_CODE if before[g] != after[g])
    assert changed == sorted(g for g in STAGE_CODE if "r2kd/augment.py" in code_files(g, root))
    assert "distill" in changed and "pair" not in changed and "report" not in changed


def test_dvcignore_keeps_bytecode_and_editor_files_out():
    ignored = (REPO / ".dvcignore").read_text().split()
    for pattern in ("__pycache__/", "*.pyc", "*.swp", "*~"):
        assert pattern in ignored

def test_dvc_reads_yaml_with_the_c_loader():
    """Every DVC command parses dvc.yaml, params.yaml and dvc.lock, and rewrites dvc.lock after each
    stage. Since ruamel.yaml 0.19 its C loader (ruamel.yaml.clib) is optional, so a fresh environment
    parsed all of it in pure Python; a no-op `dvc repro` took 1.9 s instead of 1.3 s
    (benchmarks/bench_startup.py). A lost dependency fails here, not as a slow pipeline."""
    from ruamel.yaml import YAML
    from ruamel.yaml.main import CParser

    assert CParser is not None, "ruamel.yaml.clib is not installed: run `make env`"
    assert YAML(typ="safe").Parser is CParser  # the loader dvc/utils/serialize/_yaml.py uses


def test_snakemake_parses_fast_without_torch_or_dvc(tmp_path):
    """`snakemake -n` imports only the schema: no torch, no DVC, and it works outside a git clone."""
    root = make_repo(tmp_path / "repo", override={}, git=False)
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (root / "workflow/rules/zz_probe.smk").write_text(
        "import sys\nassert not [m for m in ('torch', 'dvc', 'torch_pruning') if m in sys.modules], 'heavy import'\n")
    with open(root / "Snakefile", "a") as fh:
        fh.write('\ninclude: "workflow/rules/zz_probe.smk"\n')
    run(["snakemake", "-n", "--cores", "1", "-q"], root)  # its speed: benchmarks/bench_startup.py


def test_snakemake_lint_is_clean():
    result = run(["snakemake", "--lint"], REPO, check=False)
    assert "Congratulations, your workflow is in a good condition" in result.stdout + result.stderr, result.stdout


def test_r2kd_stages_lists_dvcs_stages_and_commands():
    from r2kd.runs import stage_commands

    dvc = [(s.name, " ".join(s.cmd.split())) for s in load_stages(REPO)]
    assert sorted(stage_commands(load_params(REPO / "params.yaml"))) == sorted(dvc)


def fake_results(root: Path) -> None:
    """Every stage's outputs without training: `check`, `pair` and `pair_pruned` run for real (what
    they write decides what students depend on), every other output is a placeholder, each stage's
    dated after the ones it reads; then DVC records them all (dvc commit) as if it had made them."""
    order = ["check", *STAGE_TABLE]  # the table lists each stage after those it reads
    stages = sorted(load_stages(root), key=lambda s: order.index(s.group))
    stamp = time.time() - 1  # after every source file (make_repo copied them), before any edit below
    for stage in stages:
        if stage.group in ("check", "pair", "pair_pruned"):
            run(stage.cmd.split(), root)
        else:
            for out in stage.outs:
                path = root / (f"{out}/export.json" if out == str(paths.EXPORT) else out)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"{out} v1\n")
    run(["dvc", "commit", "--force", "--quiet"], root)  # (links its outputs back from its cache: new mtimes)
    for stage in stages:
        level = order.index(stage.group) / 100
        for out in stage.outs:
            for path in [root / out, *(root / out).rglob("*")]:
                os.utime(path, (stamp + level, stamp + level))


def dvc_changed(root: Path) -> set[str]:
    return set(json.loads(run(["dvc", "status", "--json"], root).stdout))


def snakemake_planned(root: Path) -> set[str]:
    """The jobs `snakemake -n` would run, in DVC's stage names."""
    out = run(["snakemake", "--dry-run", "--cores", "1"], root).stdout
    planned = set()
    for rule, body in re.findall(r"^(?:local)?rule (\w+):\n((?:    .*\n?)*)", out, flags=re.M):
        if rule != "all":
            wildcards = next(iter(re.findall(r"wildcards: (.*)", body)), "")
            planned.add(STAGE_TABLE[rule].dvc_name(**dict(re.findall(r"(\w+)=([^,\s]+)", wildcards))))
    return planned


@pytest.mark.slow
def test_a_method_edit_or_a_new_pruned_teacher_makes_exactly_its_students_stale(tmp_path):
    """Both tools show what changed, and only that: an edit of r2kd/methods/kd.py makes exactly the kd
    students stale (DVC says so before `check` reruns: they depend on the file), and a new pruned
    teacher only the students of the methods that run it (r2kd), not ce's or kd's."""
    root = make_repo(tmp_path / "repo", override={"methods": ["ce", "kd", "r2kd"],
                                                  "method_params": {"ce": {}, "kd": {}, "r2kd": {}}})
    fake_results(root)
    runs = student_runs(load_params(root / "params.yaml"))
    assert dvc_changed(root) == set()
    assert snakemake_planned(root) == set()

    kd_file = root / "r2kd/methods/kd.py"
    original = kd_file.read_text()
    kd_file.write_text(original + "# a comment\n")
    kd_students = {r.stage for r in runs if r.method == "kd"}
    cohorts = {r.stage for r in runs if r.in_cohort}  # every listed method's code is theirs
    assert dvc_changed(root) == {"check", *kd_students - cohorts}  # a cohort depends on kd.py through its stamp
    assert {s for s in snakemake_planned(root) if s.startswith("distill")} == kd_students
    kd_file.write_text(original)  # back as it was: DVC compares content, nothing to do
    assert dvc_changed(root) - {"check"} == set()  # (check reruns: its dep r2kd/ has a new mtime)
    # and Snakemake agrees: the stamp is dated when kd.py last changed, and the results DVC vouches for
    # are dated after their inputs (r2kd/handoff.py align_with_dvc): the dry run above changed nothing
    assert snakemake_planned(root) == set()

    # what a new pruned teacher does: its file changes, then each pair's pins are rewritten
    teacher = next(iter(load_params(root / "params.yaml").teachers))
    (root / paths.pruned_dir(teacher) / "model.pt").write_text("pruned v2\n")
    assert {s for s in snakemake_planned(root) if s.startswith("distill")} == \
        {r.stage for r in runs if r.method == "r2kd"}
    for pair in load_params(root / "params.yaml").pairs:
        run(["workflow/scripts/r2kd", "pair-pruned", pair], root)
    changed = dvc_changed(root)
    assert {s for s in changed if s.startswith("distill")} == {r.stage for r in runs if r.method == "r2kd"}
    assert not {s for s in changed if s.startswith("pair@")}  # the teacher pin holds no pruned teacher


def args_of(stage, spec) -> dict[str, str]:
    """The arguments of an expanded DVC stage, read back from its command."""
    return dict(zip(spec.args, stage.cmd.split()[2:]))


@pytest.mark.parametrize("root", [REPO, None], ids=["default", "changed"])
def test_dvc_yaml_declares_each_stage_as_the_pipeline_table_does(root, tmp_path):
    """dvc.yaml is written by hand; r2kd/pipeline.py is what the CLI, paths, records, code stamps and
    launcher read. Each DVC stage has the table's command, params keys, outputs, record and code
    stamp (and Snakemake's jobs equal DVC's stages: assert_same_dag)."""
    if root is None:
        root = make_repo(tmp_path / "repo", override={"methods": ["kd", "r2kd", "dkd"],
                                                      "method_params": {"kd": {}, "r2kd": {}, "dkd": {}}})
    stages = load_stages(root)
    cohorts = load_params(root / "params.yaml").cohort_seeds
    assert {s.group for s in stages} == {"check", *STAGE_TABLE} - (set() if cohorts else {"distill_cohort"})
    for stage in stages:
        if stage.group == "check":
            assert " ".join(stage.cmd.split()) == CHECK_CMD
            continue
        spec = STAGE_TABLE[stage.group]
        args = args_of(stage, spec)
        assert stage.name == spec.dvc_name(**args)
        assert " ".join(stage.cmd.split()) == spec.cmd(**args)
        assert sorted(stage.params) == sorted(spec.params_keys(**args)), stage.name
        assert sorted(stage.outs) == sorted(p.rstrip("/") for p in spec.output_paths(**args)), stage.name
        record = spec.record_path(**args).as_posix()
        assert any(record == out or record.startswith(out + "/") for out in stage.outs), stage.name
        assert str(paths.code_stamp(stage.group)) in stage.deps
        method = args.get("method")
        assert ("r2kd/methods/" + f"{method}.py" in stage.deps) == bool(method), stage.name
        if method:  # its method's pin; the pruned teacher only through it
            assert str(paths.method_pin(args["pair"], method)) in stage.deps
            assert not [d for d in stage.deps if d.startswith("runs/pruned")]


def test_snakemake_rules_declare_the_tables_stages():
    """Each rule of workflow/rules/ is a stage of the table (plus `all`), and no rule uses a lambda."""
    rules = "".join(p.read_text() for p in sorted((REPO / "workflow/rules").glob("*.smk")))
    assert set(re.findall(r"^rule (\w+):", rules, flags=re.M)) == set(STAGE_TABLE)
    assert "lambda" not in rules + (REPO / "Snakefile").read_text()


def test_adding_a_method_changes_no_other_stages_code(tmp_path):
    """A new method is two new files (r2kd/methods/<name>.py, r2kd/method_params/<name>.py): no code
    stamp of any stage changes, so DVC and Snakemake rerun no teacher and no other method's students;
    params.yaml may list it at once."""
    root = make_repo(tmp_path / "repo", override={}, git=False)
    run(["workflow/scripts/r2kd", "check", "--stamp"], root)
    before = {p.name: p.read_text() for p in (root / paths.CODE_STAMPS).iterdir()}
    for folder in ("methods", "method_params"):
        text = (root / "r2kd" / folder / "kd.py").read_text()
        (root / "r2kd" / folder / "mse.py").write_text(
            text.replace('"kd"', '"mse"').replace("KDParams", "MSEParams").replace("method_params.kd", "method_params.mse"))
    run(["workflow/scripts/r2kd", "check", "--stamp"], root)
    assert {p.name: p.read_text() for p in (root / paths.CODE_STAMPS).iterdir()} == before
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["methods"].append("mse")
    params["method_params"]["mse"] = {"temperature": 2.0}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "is valid" in run(["workflow/scripts/r2kd", "check", "--stamp"], root).stderr
    # listed, it is part of the cohorts' code (a cohort trains every listed method), no one else's
    after = {p.name: p.read_text() for p in (root / paths.CODE_STAMPS).iterdir()}
    assert sorted(name for name in after if after[name] != before[name]) == ["distill_cohort.json"]
