"""Fault injection: crashes, corrupt or foreign files, bad data, full disks, diverging losses.

Each case checks what the user sees (one clear message, non-zero exit, no traceback for user
errors) and what is kept (no partial artefact; resume state survives). Run alone with
`pytest -m faults`. The table in docs/reliability.md lists them.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import env, make_repo, run
from r2kd import io, paths
from r2kd.config import TrainRecipe
from r2kd.errors import CheckpointError, DataError, TrainingDiverged, UserError
from r2kd.io import load_checkpoint, save_checkpoint, sha256_file
from r2kd.train import Trainer, cross_entropy_objective

pytestmark = pytest.mark.faults


# --- small in-process training set-up ---------------------------------------------------------
class Batches:
    """A fixed synthetic classification set; shuffles with the given generator like the real loader."""

    def __init__(self, generator: torch.Generator | None, n: int = 48, batch: int = 16):
        g = torch.Generator().manual_seed(123)
        self.x, self.y = torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)
        self.generator, self.batch = generator, batch

    def __len__(self):
        return len(self.x) // self.batch

    def __iter__(self):
        order = torch.randperm(len(self.x), generator=self.generator) if self.generator else torch.arange(len(self.x))
        for i in range(len(self)):
            idx = order[i * self.batch:(i + 1) * self.batch]
            yield self.x[idx], self.y[idx]


def make_trainer(tmp_path: Path, objective=cross_entropy_objective, epochs: int = 3, fingerprint: str = "f") -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(144, 4))
    generator = torch.Generator().manual_seed(7)
    return Trainer(model=model, recipe=TrainRecipe(epochs=epochs, batch_size=16, lr=0.1, momentum=0.9, weight_decay=5e-4,
                                                   milestones=[2]),
                   train_batches=Batches(generator), test_batches=Batches(None), objective=objective,
                   generators={"data": generator}, state_path=tmp_path / "state" / "resume.pt",
                   fingerprint=fingerprint, label="t")


def weights_hash(model: torch.nn.Module) -> str:
    return io.sha256_state_dict(model.state_dict())


def test_same_seed_same_weights(tmp_path):
    a, b = make_trainer(tmp_path / "a"), make_trainer(tmp_path / "b")
    ra, rb = a.fit(), b.fit()
    assert weights_hash(a.model) == weights_hash(b.model)
    assert [r["test_top1"] for r in ra.history] == [r["test_top1"] for r in rb.history]


def test_crash_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    reference = make_trainer(tmp_path / "ref")
    reference.fit()

    calls = {"n": 0}

    def crashing(model, x, y, epoch):
        calls["n"] += 1
        if epoch == 2 and calls["n"] == 5:  # in the middle of epoch 2
            raise KeyboardInterrupt
        return cross_entropy_objective(model, x, y, epoch)

    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path / "run", objective=crashing).fit()
    assert load_checkpoint(tmp_path / "run/state/resume.pt")["epoch"] == 1  # last completed epoch kept
    resumed = make_trainer(tmp_path / "run")
    result = resumed.fit()
    assert result.resumed_from_epoch == 1
    assert weights_hash(resumed.model) == weights_hash(reference.model)


def test_changed_fingerprint_starts_over(tmp_path):
    first = make_trainer(tmp_path, epochs=2)
    first.fit()
    again = make_trainer(tmp_path, epochs=2, fingerprint="other params")
    assert again.fit().resumed_from_epoch == 0


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_last_good_state(tmp_path):
    def diverging(model, x, y, epoch):
        terms = cross_entropy_objective(model, x, y, epoch)
        diverging.step += 1
        if epoch == 2 and diverging.step == 5:  # second step of epoch 2 (3 steps per epoch)
            terms["ce"] = terms["ce"] * float("nan")
        return terms

    diverging.step = 0
    trainer = make_trainer(tmp_path, objective=diverging)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2"):
        trainer.fit()
    state = load_checkpoint(tmp_path / "state/resume.pt")
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


# --- files ------------------------------------------------------------------------------------
def test_atomic_write_leaves_nothing_when_interrupted(tmp_path):
    target = tmp_path / "out" / "model.pt"
    save_checkpoint(target, {"w": torch.ones(2)})
    before = sha256_file(target)
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"half a fil")
            raise RuntimeError("killed")
    assert sha256_file(target) == before
    assert [p.name for p in target.parent.iterdir()] == ["model.pt"]  # no temp file left behind


def test_disk_full_is_a_clear_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    io.write_json(target, {"ok": 1})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "replace", full)
    with pytest.raises(UserError, match="No space left on device"):
        io.write_json(target, {"ok": 2})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_permission_error_names_the_path(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(io.tempfile, "mkstemp", denied)
    with pytest.raises(UserError, match=r"cannot write .*model.pt: Permission denied"):
        save_checkpoint(tmp_path / "model.pt", {})


@pytest.mark.parametrize("kind", ["truncated", "garbage", "pickled_object", "missing"])
def test_bad_checkpoint_files_are_refused(tmp_path, kind):
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"format": "r2kd-model-v1", "model": {"w": torch.randn(50, 50)}})
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif kind == "garbage":
        path.write_bytes(os.urandom(4096))
    elif kind == "pickled_object":
        torch.save({"model": {"w": torch.ones(1)}, "config": Path("/tmp")}, path)  # a non-tensor object
    else:
        path.unlink()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    if kind == "pickled_object":
        assert "pickled Python objects" in str(info.value)


def test_wrong_architecture_is_refused(tmp_path):
    from r2kd.modelfile import build, load_model, save_model

    spec = {"name": "resnet8", "num_classes": 10, "in_channels": 1, "input_size": 8}
    path = tmp_path / "model.pt"
    save_model(path, build(spec), spec)
    with pytest.raises(CheckpointError, match="holds"):
        load_model(path, {**spec, "name": "resnet14"})
    # a foreign state dict of the right format marker but the wrong shapes
    blob = load_checkpoint(path)
    blob["arch"] = {**spec, "name": "wrn_16_1"}
    save_checkpoint(path, blob)
    with pytest.raises(CheckpointError, match="weights do not fit the architecture"):
        load_model(path, {**spec, "name": "wrn_16_1"})


def test_missing_prepared_data_is_a_data_error(tmp_path):
    from r2kd.data import load_prepared

    with pytest.raises(DataError):
        load_prepared(tmp_path / "nothing-here")


# --- the CLI, end to end ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repo(tmp_path_factory.mktemp("faults") / "repo",
                     override={"data": {"train_limit": 40, "test_limit": 8}, "train_teacher": {"epochs": 5, "milestones": [3]}})


def test_cli_user_errors_exit_2_without_traceback(repo):
    result = run(["r2kd", "train-teacher", "resnet14"], repo, check=False)  # nothing prepared yet
    assert result.returncode == 2
    assert "data/prepared" in result.stderr and "Traceback" not in result.stderr


def _kill_when(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"finished before it could be killed:\n{proc.communicate()}"
        assert time.time() < deadline, "no resume state appeared"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["dvc", "snakemake"])
def test_sigkill_mid_training_then_rerun_resumes(repo, tmp_path, tool):
    run(["dvc", "repro", "prepare"], repo) if tool == "dvc" else None
    run(["snakemake", "--cores", "1", "data/prepared/train.pt"], repo) if tool == "snakemake" else None
    out = repo / "runs/teachers/resnet14"
    for leftover in (repo / paths.STATE, out):
        subprocess.run(["rm", "-rf", str(leftover)])
    command = (["dvc", "repro", "train_teacher@resnet14"] if tool == "dvc"
               else ["snakemake", "--cores", "1", "runs/teachers/resnet14/model.pt"])
    proc = subprocess.Popen(command, cwd=repo, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    _kill_when(repo / paths.state_file(paths.teacher_dir("resnet14")), proc)
    assert not (out / "model.pt").exists() and not (out / "metrics.json").exists()  # nothing half-written

    if tool == "snakemake":  # Snakemake itself was killed too: its documented recovery is --unlock
        run(["snakemake", "--unlock"], repo)
    rerun = ["dvc", "repro", "train_teacher@resnet14"] if tool == "dvc" else [
        "snakemake", "--cores", "1", "--rerun-incomplete", "runs/teachers/resnet14/model.pt"]
    log = run(rerun, repo)
    assert "resuming after epoch" in log.stdout + log.stderr
    assert not (repo / paths.state_file(paths.teacher_dir("resnet14"))).exists()  # superseded by the result

    # the same stage, never interrupted, in a fresh copy
    fresh = make_repo(tmp_path / "fresh", override={"data": {"train_limit": 40, "test_limit": 8},
                                                    "train_teacher": {"epochs": 5, "milestones": [3]}})
    run(["dvc", "repro", "train_teacher@resnet14"], fresh)
    assert sha256_file(out / "model.pt") == sha256_file(fresh / "runs/teachers/resnet14/model.pt")
    got, want = (json.loads((d / "runs/teachers/resnet14/metrics.json").read_text()) for d in (repo, fresh))
    assert got["timing"]["resumed_from_epoch"] >= 1
    for metrics in (got, want):
        metrics.pop("timing")
    assert got == want


@pytest.mark.slow
def test_corrupt_teacher_checkpoint_via_cli(repo):
    run(["dvc", "repro", "train_teacher@resnet14"], repo)
    model = repo / "runs/teachers/resnet14/model.pt"
    model.write_bytes(model.read_bytes()[:2000])
    result = run(["r2kd", "prune", "resnet14"], repo, check=False)
    assert result.returncode == 2
    assert "runs/teachers/resnet14/model.pt" in result.stderr and "corrupt" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_import_pretrained_teacher_verified_by_sha256(repo, tmp_path):
    import yaml

    from r2kd import models

    run(["dvc", "repro", "prepare"], repo)
    torch.manual_seed(3)
    published = models.create("resnet14", 10, in_channels=1, input_size=8)
    ckpt = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"model": published.state_dict()}, ckpt)  # the RepDistiller / mdistiller layout
    params = yaml.safe_load((repo / "params.yaml").read_text())

    params["teachers"]["resnet14"] = {"checkpoint": str(ckpt), "checkpoint_sha256": "0" * 64}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    wrong = run(["r2kd", "train-teacher", "resnet14"], repo, check=False)
    assert wrong.returncode == 2 and "SHA-256" in wrong.stderr and "Traceback" not in wrong.stderr

    params["teachers"]["resnet14"]["checkpoint_sha256"] = sha256_file(ckpt)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    run(["r2kd", "train-teacher", "resnet14"], repo)
    metrics = json.loads((repo / "runs/teachers/resnet14/metrics.json").read_text())
    assert metrics["imported"] is True and str(ckpt) in metrics["provenance"]["inputs_sha256"]
    saved = load_checkpoint(repo / "runs/teachers/resnet14/model.pt")["model"]
    assert all(torch.equal(saved[k], v) for k, v in published.state_dict().items())
