"""Stage `distill_cohort` (a seed of `cohort_seeds`): the runs of a (pair, seed) trained together,
sharing views and frozen forwards, must end bit-identical to the same runs trained alone (CPU), do
less frozen work, resume after a crash, and write nothing when one of them diverges. (Both tools
run it in the session's built checkouts: tests/conftest.py's TINY has a cohort seed.)"""

from __future__ import annotations

import os
import shutil

import pytest
import torch
import yaml

from conftest import make_repo
from r2kd import paths
from r2kd.config import load_params
from r2kd.files import read_json, sha256_file

PAIR = "resnet14-resnet8"
SETUP = {
    "data": {"train_limit": 20, "test_limit": 8},
    "pairs": {PAIR: {"teacher": "resnet14", "student": "resnet8"}},
    "methods": ["ce", "kd", "dkd", "r2kd"],
    "augments": ["none", "cutmix"],
    "seeds": [0],
    "cohort_seeds": [],
    "distill": {"epochs": 2, "milestones": [1], "batch_size": 32},
    "method_params": {"ce": {}, "kd": {"temperature": 4.0}, "dist": {}, "dkd": {"warmup": 1},
                      "r2kd": {"aug_view": "cutmix", "rank": "hard"}},
}
RESULTS = ("model.pt", "log.csv", "metrics.json")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """Teacher, pruned copy, pair and its pins made once; each test works in its own copy of this checkout."""
    from r2kd.stages import pair, pair_pruned, prepare, prune, train_teacher

    root = make_repo(tmp_path_factory.mktemp("cohort") / "repo", override=SETUP, git=False)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        params = load_params("params.yaml")
        prepare.run(params)
        train_teacher.run(params, "resnet14")
        prune.run(params, "resnet14")
        pair.run(params, PAIR)
        pair_pruned.run(params, PAIR)
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture
def work(repo, tmp_path, monkeypatch):
    copy = tmp_path / "work"
    shutil.copytree(repo, copy, symlinks=True)
    monkeypatch.chdir(copy)
    monkeypatch.setattr("r2kd.stages.record.CHECKOUT", copy)  # fingerprints read this copy's code
    return copy


def _params(cohort: bool, device: str = "cpu") -> object:
    """The checkout's params, its one seed alone (`seeds`) or as a cohort (`cohort_seeds`)."""
    params = load_params("params.yaml")
    seeds = {"seeds": [], "cohort_seeds": [0]} if cohort else {"seeds": [0], "cohort_seeds": []}
    return params.model_copy(update={**seeds, "runtime": params.runtime.model_copy(update={"device": device})})


def _runs(params):
    from r2kd.runs import student_runs

    return student_runs(params)


def _count_frozen_forwards(monkeypatch) -> dict[str, int]:
    """Count every forward of the frozen networks the distill stages load."""
    from r2kd.stages import distill, distill_cohort

    counts = {"teacher": 0, "pruned": 0}
    real = distill.load_frozen

    def counting(*args, **kwargs):
        frozen = real(*args, **kwargs)
        for name, module in frozen.items():
            module.register_forward_hook(lambda *_, name=name: counts.__setitem__(name, counts[name] + 1))
        return frozen

    monkeypatch.setattr(distill, "load_frozen", counting)
    monkeypatch.setattr(distill_cohort, "load_frozen", counting)
    return counts


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])])
def test_a_cohort_gives_each_run_the_bytes_it_gets_alone_with_a_fraction_of_the_frozen_work(work, monkeypatch,
                                                                                          device):
    """On CUDA too (deterministic kernels, the fast path: one CUDA graph per run alone, one for the
    whole cohort)."""
    from r2kd.stages import distill, distill_cohort

    counts = _count_frozen_forwards(monkeypatch)
    alone = _params(False, device)
    runs = _runs(alone)
    assert len(runs) == 8
    for run in runs:
        distill.run(alone, run.pair, run.method, run.augment, run.seed)
    solo = {run.dir: {name: sha256_file(run.dir / name) for name in RESULTS} for run in runs}
    solo_counts = dict(counts)
    shutil.rmtree(paths.RUNS / "students")

    counts.update(teacher=0, pruned=0)
    together = _params(True, device)
    runs = _runs(together)
    distill_cohort.run(together, PAIR, 0)
    stage = f"distill_cohort@{PAIR}-0"
    assert [run.stage for run in runs] == [stage] * 8
    for run in runs:
        assert {name: sha256_file(run.dir / name) for name in RESULTS} == solo[run.dir], run.dir
        provenance = read_json(run.dir / "provenance.json")
        assert provenance["cohort"] == stage
        assert provenance["result_key"] == distill.result_key(together, run, read_json("data/prepared/meta.json"))
    record = read_json(paths.cohort_dir(PAIR, 0) / "cohort.json")
    assert record["runs"] == [run.dir.name for run in runs]
    assert record["params"]["methods"] == SETUP["methods"] and "method_params" in record["params"]
    assert not list(paths.STATE.rglob("*.pt"))  # the cohort's resume state goes once the results are written
    if device == "cuda":
        assert read_json(runs[-1].dir / "provenance.json")["step"] == "cuda-graph"
        return  # the fast path batches the teacher's two views on CUDA: other pass counts
    # Alone: kd, dkd and r2kd run the teacher on the clean batch, and under cutmix on the view too:
    # 3 + 6 passes per step; r2kd the pruned copy: 1 + 2. Together: clean and view, once each.
    steps = 2 * 7  # 2 epochs of 200 images in batches of 32
    assert solo_counts == {"teacher": 9 * steps, "pruned": 3 * steps}
    assert counts == {"teacher": 2 * steps, "pruned": 2 * steps}


def test_scoring_models_on_threads_changes_no_byte_of_the_evaluation(work, monkeypatch):
    """The evaluate stage on the CPU: models scored several at once (r2kd/workers.py) give
    reports/eval.json byte for byte as scored one by one."""
    from r2kd.stages import corrupt, distill, evaluate

    base = _params(False)
    for run in _runs(base):
        distill.run(base, run.pair, run.method, run.augment, run.seed)
    corrupt.run(base)
    digests = {}
    for workers in (1, 2):
        monkeypatch.setattr(evaluate, "cpu_workers", lambda device, threads: workers)
        evaluate.run(base)
        digests[workers] = sha256_file(paths.EVAL)
        paths.EVAL.unlink()
    assert digests[2] == digests[1]


def test_a_cohort_where_a_run_diverges_writes_nothing_and_names_the_run(work, monkeypatch):
    """The stage fails, naming each diverged run; no run's folder is written (the others went on to
    the end, so the rerun resumes there and says the same, until params change)."""
    from r2kd.errors import TrainingDiverged
    from r2kd.fast import cohort as cohort_lib
    from r2kd.stages import distill_cohort

    params = _params(True)
    real_run_epochs = cohort_lib.run_epochs

    def second_diverges(members, *args, **kwargs):
        outcomes = real_run_epochs(members, *args, **kwargs)
        members[1].failed = outcomes[1] = TrainingDiverged("loss is nan at epoch 2 (run 1)")
        return outcomes

    monkeypatch.setattr(cohort_lib, "run_epochs", second_diverges)
    with pytest.raises(TrainingDiverged, match=rf"distill_cohort@{PAIR}-0: 1 of 8 runs diverged:\n.*run 1"):
        distill_cohort.run(params, PAIR, 0)
    assert not paths.cohort_dir(PAIR, 0).exists()


def test_a_cohort_killed_mid_way_resumes_and_ends_as_an_uninterrupted_cohort(work, monkeypatch):
    from r2kd.fast import cohort as cohort_lib
    from r2kd.stages import distill_cohort

    params = _params(True)
    params = params.model_copy(update={"methods": ["kd", "r2kd"]})
    runs = _runs(params)
    distill_cohort.run(params, PAIR, 0)
    reference = {run.dir: {name: sha256_file(run.dir / name) for name in RESULTS} for run in runs}
    shutil.rmtree(paths.cohort_dir(PAIR, 0))  # what either tool does before it runs the stage again

    def killed_after_first_epoch(members, step, start_epoch, epochs, **kwargs):
        real_run_epochs(members, step, start_epoch, 1, **kwargs)
        raise KeyboardInterrupt

    real_run_epochs = cohort_lib.run_epochs
    monkeypatch.setattr(cohort_lib, "run_epochs", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        distill_cohort.run(params, PAIR, 0)
    state = paths.state_file(paths.cohort_dir(PAIR, 0))
    assert state.is_file() and not paths.cohort_dir(PAIR, 0).exists()  # epoch 1 of every run, in one file
    monkeypatch.setattr(cohort_lib, "run_epochs", real_run_epochs)
    distill_cohort.run(params, PAIR, 0)
    for run in runs:
        assert {name: sha256_file(run.dir / name) for name in RESULTS} == reference[run.dir], run.dir
    assert not state.exists()
    timing = read_json(paths.timing_file(runs[0].dir))
    assert timing["resumed_from_epoch"] == 1 and timing["cohort_size"] == len(runs)


class _FakeStream:
    """torch.cuda's stream API as no-ops, so that the CPU runs the side-by-side path's order."""

    def __init__(self, device=None) -> None:
        pass

    def wait_stream(self, other) -> None:
        pass


@pytest.mark.parametrize("variant", ["graph", "side by side"])
def test_the_cohort_step_as_one_graph_and_side_by_side_matches_the_eager_cohort(work, monkeypatch, variant):
    """The CUDA-graph plumbing (one capture for every run's step, the view draws of each view kind
    handed to its runs) on the CPU stand-in backend; and the CUDA order of a cohort step (every
    shared pass first, then each student on its own stream) with no-op streams: same bytes as the
    plain eager cohort, and no shared pass computed twice."""
    import contextlib

    from r2kd.fast.cohort import fit_cohort
    from r2kd.fast.graphs import EagerReplayBackend
    from r2kd.methods.objective import SharedPasses
    from r2kd.runtime import RunSpec, seed_everything
    from r2kd.stages import distill
    from r2kd.stages.dataset import load_data

    params = _params(True)
    spec = RunSpec.of(params.runtime, None)
    runs = [run for run in _runs(params) if run.method in ("ce", "dkd", "r2kd")]
    results, passes = {}, {}
    for case in ("eager", variant):
        data_generator = seed_everything(0)
        views: dict[str, torch.Generator] = {}
        data = load_data(params.distill.batch_size, torch.device("cpu"), data_generator)
        frozen = distill.load_frozen(params, spec, runs[0], data.meta, ("pruned", "teacher"))
        shared = SharedPasses()
        built = [distill.build_run(params, spec, run, data, frozen, data_generator,
                                   lambda v: views.setdefault(v, torch.Generator().manual_seed(distill.view_seed(0))),
                                   shared) for run in runs]
        backend = EagerReplayBackend()
        for b in built:
            b.trainer.graphs, b.trainer.graph_backend = case == "graph", backend
        with monkeypatch.context() as patch:
            if case == "side by side":
                patch.setattr(torch.cuda, "Stream", _FakeStream)
                patch.setattr(torch.cuda, "current_stream", lambda device=None: _FakeStream())
                patch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
            outcomes, kind = fit_cohort([b.trainer for b in built], shared, paths.STATE / f"{case}.pt", "fp", "c",
                                        concurrent=case == "side by side")
        assert kind == ("cuda-graph" if case == "graph" else "eager")
        assert (backend.captures > 0) == (case == "graph")
        results[case] = [({k: v.clone() for k, v in b.model.state_dict().items()}, o.history) for b, o in
                         zip(built, outcomes)]
        passes[case] = shared.computed
    for (eager_state, eager_log), (other_state, other_log) in zip(results["eager"], results[variant]):
        assert all(torch.equal(eager_state[k], other_state[k]) for k in eager_state)
        assert [{k: v for k, v in r.items() if k != "seconds"} for r in eager_log] == \
               [{k: v for k, v in r.items() if k != "seconds"} for r in other_log]
    if variant == "side by side":
        assert passes[variant] == passes["eager"]  # the prefetch computed each pass once, the steps reused it


@pytest.mark.parametrize("change, message", [
    ({"seeds": [], "cohort_seeds": [0], "runtime": {"nproc_per_node": 2}}, "cohort_seeds: a cohort trains in one"),
    ({"cohort_seeds": [0]}, r"cohort_seeds: \[0\] also in seeds"),
    ({"seeds": []}, "seeds: empty, and so is cohort_seeds"),
    ({"runtime": {"share_teachers": True}}, "runtime.share_teachers: moved to cohort_seeds"),
])
def test_cohort_seeds_are_checked_before_any_compute(tmp_path, change, message):
    from r2kd.errors import ConfigError

    raw = yaml.safe_load((make_repo(tmp_path / "repo", override={"seeds": [0], "cohort_seeds": []},
                                    git=False) / "params.yaml").read_text())
    for key, value in change.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=message):
        load_params(tmp_path / "p.yaml")


def test_each_command_names_the_other_for_a_seed_of_the_other_list(work):
    from r2kd.errors import ConfigError
    from r2kd.runs import cohort_runs, find_run

    together = _params(True)
    with pytest.raises(ConfigError, match=rf"0 is a cohort seed: `r2kd distill-cohort {PAIR} 0`"):
        find_run(together, PAIR, "kd", "none", 0)
    assert len(cohort_runs(together, PAIR, 0)) == 8
    with pytest.raises(ConfigError, match=r"no cohort .* \(pairs .*, cohort_seeds \[\]\)"):
        cohort_runs(_params(False), PAIR, 0)
