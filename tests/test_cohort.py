"""runtime.share_teachers: the runs of a (pair, seed) trained together, sharing views and frozen
forwards, must end bit-identical to the same runs trained alone (CPU), do less frozen work, and
leave every other run its final resume state, which its own stage takes under its own fingerprint only."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import make_repo
from r2kd import paths
from r2kd.config import load_params
from r2kd.files import read_json, sha256_file, write_text

PAIR = "resnet14-resnet8"
SETUP = {
    "data": {"train_limit": 20, "test_limit": 8},
    "pairs": {PAIR: {"teacher": "resnet14", "student": "resnet8"}},
    "methods": ["ce", "kd", "dkd", "r2kd"],
    "augments": ["none", "cutmix"],
    "seeds": [0],
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


def _set_sharing(on: bool, device: str = "cpu") -> object:
    params = load_params("params.yaml")
    return params.model_copy(update={"runtime": params.runtime.model_copy(update={"share_teachers": on,
                                                                                  "device": device})})


def _runs(params):
    from r2kd.runs import student_runs

    return student_runs(params)


def _count_frozen_forwards(monkeypatch) -> dict[str, int]:
    """Count every forward of the frozen networks the distill stage loads."""
    from r2kd.stages import distill

    counts = {"teacher": 0, "pruned": 0}
    real = distill.load_frozen

    def counting(*args, **kwargs):
        frozen = real(*args, **kwargs)
        for name, module in frozen.items():
            module.register_forward_hook(lambda *_, name=name: counts.__setitem__(name, counts[name] + 1))
        return frozen

    monkeypatch.setattr(distill, "load_frozen", counting)
    return counts


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])])
def test_a_cohort_gives_each_run_the_bytes_it_gets_alone_with_a_fraction_of_the_frozen_work(work, monkeypatch,
                                                                                          device):
    """On CUDA too (deterministic kernels, the fast path: one CUDA graph per run alone, one for the
    whole cohort)."""
    from r2kd.stages import distill

    counts = _count_frozen_forwards(monkeypatch)
    alone = _set_sharing(False, device)
    runs = _runs(alone)
    assert len(runs) == 8
    for run in runs:
        distill.run(alone, run.pair, run.method, run.augment, run.seed)
    solo = {run: {name: sha256_file(run.dir / name) for name in RESULTS} for run in runs}
    solo_counts = dict(counts)
    shutil.rmtree(paths.RUNS / "students")

    counts.update(teacher=0, pruned=0)
    shared = _set_sharing(True, device)
    first, rest = runs[0], runs[1:]
    distill.run(shared, first.pair, first.method, first.augment, first.seed)
    # the first stage trained all eight; the seven others' final resume states wait, outside any output
    assert all(paths.state_file(run.dir).is_file() for run in rest) and not any(run.dir.exists() for run in rest)
    for run in rest:
        distill.run(shared, run.pair, run.method, run.augment, run.seed)
    assert not any(paths.state_file(run.dir).exists() for run in runs)  # each taken by its stage, then dropped

    for run in runs:
        assert {name: sha256_file(run.dir / name) for name in RESULTS} == solo[run], run.stage
        provenance = read_json(run.dir / "provenance.json")
        assert provenance["cohort"] == [r.stage for r in runs]
        assert provenance["result_key"] == distill.result_key(shared, run, read_json("data/prepared/meta.json"))
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

    base = _set_sharing(False)
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


def test_only_the_runs_a_change_touches_are_trained_again(work, monkeypatch):
    from r2kd.stages import distill

    shared = _set_sharing(True)
    runs = _runs(shared)
    for run in runs:
        distill.run(shared, run.pair, run.method, run.augment, run.seed)
    before = {run: sha256_file(run.dir / "model.pt") for run in runs}

    # what `dvc exp run -S method_params.kd.temperature=2` does: it reruns the two kd stages
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["method_params"]["kd"]["temperature"] = 2.0
    raw["runtime"].update(share_teachers=True, device="cpu")
    Path("params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    changed = load_params("params.yaml")
    kd = [run for run in runs if run.method == "kd"]
    trained = []
    monkeypatch.setattr("r2kd.stages.distill.train_cohort", _spy(trained))
    for run in kd:
        for name in ("model.pt", "provenance.json"):  # DVC deletes a stage's outputs before running it
            (run.dir / name).unlink()
        distill.run(changed, run.pair, run.method, run.augment, run.seed)
    assert trained == [[run.stage for run in kd]]  # one cohort: both kd runs, nothing else
    for run in runs:
        assert (sha256_file(run.dir / "model.pt") == before[run]) == (run.method != "kd"), run.stage


def _spy(calls: list):
    from r2kd.stages import distill

    real = distill.train_cohort

    def spy(params, spec, due, *rest):
        calls.append([run.stage for run in due])
        return real(params, spec, due, *rest)

    return spy


def test_a_final_state_is_taken_only_under_its_own_fingerprint(work, monkeypatch):
    from r2kd.stages import distill

    shared = _set_sharing(True)
    runs = _runs(shared)
    distill.run(shared, runs[0].pair, runs[0].method, runs[0].augment, runs[0].seed)
    later = runs[1]
    assert paths.state_file(later.dir).is_file()
    # the distill code changes before the later run's stage runs: its fingerprint changes, the final
    # state (trained by the old code) is not taken; the stage trains a cohort of what is due now
    meta = read_json("data/prepared/meta.json")
    key = distill.result_key(shared, later, meta)
    source = Path("r2kd/optim.py")
    write_text(source, source.read_text() + "\n# an edit\n")
    new_key = distill.result_key(shared, later, meta)
    trained = []
    monkeypatch.setattr(distill, "train_cohort", _spy(trained))
    distill.run(shared, later.pair, later.method, later.augment, later.seed)
    assert new_key != key and trained == [[run.stage for run in runs]]  # runs[0]'s outputs are stale too
    assert read_json(later.dir / "provenance.json")["result_key"] == new_key


def test_a_run_that_diverges_in_a_cohort_is_trained_again_by_its_own_stage(work, monkeypatch):
    from r2kd.errors import TrainingDiverged
    from r2kd.fast import cohort as cohort_lib
    from r2kd.stages import distill

    shared = _set_sharing(True)
    runs = _runs(shared)
    real_run_epochs = cohort_lib.run_epochs

    def first_two_diverge(members, *args, **kwargs):
        outcomes = real_run_epochs(members, *args, **kwargs)
        for i in (0, 1):
            members[i].failed = outcomes[i] = TrainingDiverged(f"loss is nan at epoch 2 (run {i})")
        return outcomes

    monkeypatch.setattr(cohort_lib, "run_epochs", first_two_diverge)
    trained = []
    monkeypatch.setattr(distill, "train_cohort", _spy(trained))
    first = runs[0]
    with pytest.raises(TrainingDiverged, match=r"run 0"):  # the stage's own run: reported at once
        distill.run(shared, first.pair, first.method, first.augment, first.seed)
    monkeypatch.setattr(cohort_lib, "run_epochs", real_run_epochs)
    assert [paths.state_file(run.dir).is_file() for run in runs] == [False, False] + [True] * 6
    for run in runs[1:]:  # the second run's stage trains both diverged runs again; the others take their states
        distill.run(shared, run.pair, run.method, run.augment, run.seed)
    assert trained == [[run.stage for run in runs], [runs[0].stage, runs[1].stage]]
    assert all((run.dir / "model.pt").is_file() for run in runs[1:])


def test_cohort_resumes_after_a_crash_and_ends_as_an_uninterrupted_cohort(work, monkeypatch):
    from r2kd.fast import cohort as cohort_lib
    from r2kd.files import load_checkpoint
    from r2kd.runtime import RunSpec
    from r2kd.stages import distill

    shared = _set_sharing(True)
    spec = RunSpec.of(shared.runtime, None)
    runs = [run for run in _runs(shared) if run.method in ("kd", "r2kd")]

    def final_weights():
        return {run: load_checkpoint(paths.state_file(run.dir))["model"] for run in runs}

    distill.train_cohort(shared, spec, runs, runs[0])
    reference = final_weights()
    for run in runs:
        paths.state_file(run.dir).unlink()

    def crash_after_first_epoch(members, step, start_epoch, epochs, **kwargs):
        real_run_epochs(members, step, start_epoch, 1, **kwargs)
        raise KeyboardInterrupt

    real_run_epochs = cohort_lib.run_epochs
    monkeypatch.setattr(cohort_lib, "run_epochs", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        distill.train_cohort(shared, spec, runs, runs[0])
    assert list((paths.STATE / "cohort").glob("*.pt"))  # the state of epoch 1, all runs in one file
    monkeypatch.setattr(cohort_lib, "run_epochs", real_run_epochs)
    distill.train_cohort(shared, spec, runs, runs[0])
    resumed = final_weights()
    assert all(torch.equal(reference[run][k], resumed[run][k]) for run in runs for k in reference[run])
    assert not list((paths.STATE / "cohort").glob("*.pt"))  # superseded by each run's final state
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

    params = _set_sharing(True)
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


def test_sharing_teachers_needs_one_process():
    from r2kd.config import Runtime

    with pytest.raises(ValueError, match="runtime.share_teachers"):
        Runtime(share_teachers=True, nproc_per_node=2)
    assert Runtime(share_teachers=True).result_settings() == Runtime().result_settings()
