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

import conftest
from conftest import env, make_repo, run
from r2kd import files, paths
from r2kd.config import TrainRecipe
from r2kd.errors import CheckpointError, DataError, TrainingDiverged, UserError
from r2kd.files import load_checkpoint, save_checkpoint, sha256_file
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
    return files.sha256_state_dict(model.state_dict())


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
    assert state["epoch"] == 1 and len(state["history"]) == 1 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_nan_in_the_first_epoch_does_not_point_to_a_state_that_does_not_exist(tmp_path):
    def diverging(model, x, y, epoch):
        terms = cross_entropy_objective(model, x, y, epoch)
        terms["ce"] = terms["ce"] * float("nan")
        return terms

    trainer = make_trainer(tmp_path, objective=diverging)
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit()
    message = str(info.value)
    assert "epoch 1, step 1" in message and "no earlier good state exists" in message
    assert "epoch 0" not in message and str(trainer.state_path) not in message
    assert not trainer.state_path.exists()


def test_bf16_on_cpu_is_applied_when_asked_and_none_is_untouched(tmp_path):
    from r2kd.train import evaluate

    seen = []

    def recording(model, x, y, epoch):
        logits = model(x)
        seen.append(logits.dtype)
        return {"ce": torch.nn.functional.cross_entropy(logits.float(), y)}

    trainer = make_trainer(tmp_path / "bf16", objective=recording, epochs=1)
    trainer.amp = "bf16"
    trainer.fit()
    assert set(seen) == {torch.bfloat16}
    seen.clear()
    make_trainer(tmp_path / "none", objective=recording, epochs=1).fit()
    assert set(seen) == {torch.float32}
    model = make_trainer(tmp_path / "eval").model
    assert evaluate(model, Batches(None), "bf16") != evaluate(model, Batches(None), "none")


def test_effective_amp_is_recorded_and_fp16_on_cpu_warns(tmp_path):
    from conftest import write_params
    from r2kd.config import load_params
    from r2kd.runtime import effective_amp, resolve_amp
    from r2kd.stages.record import provenance

    cpu = torch.device("cpu")
    assert [effective_amp(a, cpu) for a in ("none", "bf16", "fp16")] == ["none", "bf16", "none"]
    assert effective_amp("fp16", torch.device("cuda")) == "fp16"
    with pytest.warns(UserWarning, match="runtime.amp: 'fp16' needs a CUDA device"):
        assert resolve_amp("fp16", cpu) == "none"
    for asked, ran in (("none", "none"), ("bf16", "bf16"), ("fp16", "none")):
        write_params(tmp_path, {"runtime": {"amp": asked}})
        record = provenance(load_params(tmp_path / "params.yaml"), ["runtime"], {}, 0, cpu)
        assert (record["params"]["runtime"]["amp"], record["amp"]) == (asked, ran)


# --- files ------------------------------------------------------------------------------------
def test_atomic_write_leaves_nothing_when_interrupted(tmp_path):
    target = tmp_path / "out" / "model.pt"
    save_checkpoint(target, {"w": torch.ones(2)})
    before = sha256_file(target)
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_bytes(b"half a fil")
            raise RuntimeError("killed")
    assert sha256_file(target) == before
    assert [p.name for p in target.parent.iterdir()] == ["model.pt"]  # no temp file left behind


def test_disk_full_is_a_clear_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    files.write_json(target, {"ok": 1})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "replace", full)
    with pytest.raises(UserError, match="No space left on device"):
        files.write_json(target, {"ok": 2})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_permission_error_names_the_path(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(files.tempfile, "mkstemp", denied)
    with pytest.raises(UserError, match=r"cannot write .*model.pt: Permission denied"):
        save_checkpoint(tmp_path / "model.pt", {})


def _mount_small_fs(directory: Path, size_kib: int) -> str | None:
    """Mount a file system of ``size_kib`` KiB on ``directory``; return why not, or None when mounted."""
    directory.mkdir(parents=True, exist_ok=True)
    tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(directory)],
                           capture_output=True, text=True)
    if tmpfs.returncode == 0:
        return None
    # Fallback: an ext2 image on a loop device (needs the same privilege, but some sandboxes allow one only).
    image = directory.parent / f"{directory.name}.img"
    with open(image, "wb") as fh:
        fh.truncate(max(size_kib, 64) * 1024)
    steps = [["mkfs.ext2", "-q", "-F", str(image)], ["mount", "-o", "loop", str(image), str(directory)]]
    for cmd in steps:
        try:
            loop = subprocess.run(cmd, capture_output=True, text=True)
        except FileNotFoundError as exc:
            return f"tmpfs: {tmpfs.stderr.strip()}; loop: {exc}"
        if loop.returncode != 0:
            return f"tmpfs: {tmpfs.stderr.strip()}; loop: {loop.stderr.strip()}"
    return None


@pytest.fixture
def small_fs(tmp_path):
    """A real, tiny file system (tmpfs, else a loop-mounted ext2 image): writes past it fail with ENOSPC."""
    mounted: list[Path] = []

    def make(directory: Path, size_kib: int = 64) -> Path:
        why = _mount_small_fs(directory, size_kib)
        if why is not None:
            pytest.skip(f"cannot mount a small file system here: {why}")
        mounted.append(directory)
        return directory

    yield make
    for directory in mounted:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def test_real_disk_full_during_checkpoint_write_is_a_one_line_error(tmp_path, small_fs):
    disk = small_fs(tmp_path / "disk", size_kib=64)
    target = disk / "model.pt"
    save_checkpoint(target, {"w": torch.ones(4)})
    before = sha256_file(target)
    with pytest.raises(UserError) as info:
        save_checkpoint(target, {"w": torch.randn(100_000)})  # 400 kB into 64 kB
    assert str(info.value) == f"cannot write {target}: No space left on device"
    assert sha256_file(target) == before
    assert [p.name for p in disk.iterdir()] == ["model.pt"]  # the temp file is gone
    with pytest.raises(UserError, match=r"cannot write .*metrics.json: No space left on device"):
        files.write_json(disk / "metrics.json", {"x": "y" * 200_000})
    assert [p.name for p in disk.iterdir()] == ["model.pt"]


def test_torch_zip_writer_failure_without_an_oserror_is_a_user_error(tmp_path, monkeypatch):
    def failing_save(obj, fh):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing "
                           "file data/0: file write failed")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(UserError, match=r"cannot write .*model.pt: (No space left on device|write failed)"):
        save_checkpoint(tmp_path / "model.pt", {"w": torch.ones(1)})
    assert list(tmp_path.iterdir()) == []
    # any other RuntimeError is a bug, and keeps its traceback
    monkeypatch.setattr(torch, "save", lambda obj, fh: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        save_checkpoint(tmp_path / "model.pt", {"w": torch.ones(1)})


def test_cli_prepare_on_a_full_disk_exits_2_without_traceback(tmp_path, small_fs):
    repo = make_repo(tmp_path / "repo", override={"data": {"train_limit": None, "test_limit": None}}, git=False)
    small_fs(repo / "data" / "prepared", size_kib=32)  # the full digits train split needs ~80 kB
    result = run(["r2kd", "prepare"], repo, check=False)
    assert result.returncode == 2, result.stderr
    assert "cannot write data/prepared/train.pt: No space left on device" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (repo / "data" / "prepared").iterdir()) == []


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


class RunsACommand:
    """Unpickling this runs a shell command: what a malicious checkpoint does to a plain torch.load."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("layout", ["zip", "legacy", "raw_pickle"])
def test_malicious_checkpoint_is_named_as_such_and_not_run(tmp_path, layout):
    import pickle

    marker = tmp_path / "PWNED_FILE"
    payload = {"model": {"w": torch.ones(1)}, "extra": RunsACommand(f"touch {marker}")}
    path = tmp_path / "model.pt"
    if layout == "raw_pickle":
        path.write_bytes(pickle.dumps(payload, protocol=4))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=layout == "zip")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    message = str(info.value).replace(str(path), "")
    assert not marker.exists()
    assert "pickled Python objects" in message and "system" in message
    assert "malicious" in message and "weights-only" in message and "corrupt" not in message
    assert "\n" not in message


def test_corrupt_and_malicious_checkpoints_get_different_messages(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"w": torch.randn(50, 50)})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(truncated)
    message = str(info.value).replace(str(truncated), "")  # the test's directory name has both words
    assert "corrupt, truncated" in message and "malicious" not in message
    assert "rerun the stage that writes it" in message


def test_imported_teacher_holding_code_is_refused_without_rerun_advice(tmp_path):
    from r2kd.modelfile import build
    from r2kd.stages.train_teacher import _import_checkpoint

    marker = tmp_path / "PWNED_FILE"
    spec = {"name": "resnet8", "num_classes": 10, "in_channels": 1, "input_size": 8}
    ckpt = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"model": build(spec).state_dict(), "opt": RunsACommand(f"touch {marker}")}, ckpt)
    with pytest.raises(CheckpointError) as info:
        _import_checkpoint(build(spec), str(ckpt), sha256_file(ckpt))
    message = str(info.value)
    assert not marker.exists()
    assert "pickled Python objects" in message and "malicious" in message
    assert "rerun the stage" not in message and "weights-only state dict" in message


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
    from r2kd.data.prepared import load_prepared

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


def test_distill_ce_with_the_teacher_deleted_names_the_file_and_its_stage(repo):
    """A `ce` student needs no teacher weights, but its pair file (which pins them) is an input."""
    run(["r2kd", "prepare"], repo)
    (repo / "runs/teachers/resnet14/model.pt").unlink(missing_ok=True)
    result = run(["r2kd", "distill", "resnet14-resnet8", "ce", "default", "0"], repo, check=False)
    assert result.returncode == 2, result.stderr
    assert "runs/pairs/resnet14-resnet8.json does not exist" in result.stderr
    assert "r2kd pair resnet14-resnet8" in result.stderr and "Traceback" not in result.stderr
    result = run(["r2kd", "pair", "resnet14-resnet8"], repo, check=False)  # the pair stage names the teacher
    assert result.returncode == 2 and "runs/teachers/resnet14/model.pt does not exist" in result.stderr
    assert "r2kd train-teacher resnet14" in result.stderr and "Traceback" not in result.stderr


def test_input_hashes_name_the_producing_stage(tmp_path, monkeypatch):
    from r2kd.stages.record import input_hashes

    monkeypatch.chdir(tmp_path)
    for missing, stage in (("data/prepared/meta.json", "r2kd prepare"), ("runs/pruned/vgg13/model.pt", "r2kd prune vgg13"),
                           ("runs/pairs/vgg13-vgg8.json", "r2kd pair vgg13-vgg8")):
        with pytest.raises(UserError, match=f"{missing} does not exist.*{stage}"):
            input_hashes([Path(missing)])


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
    command = ([conftest.tool("dvc", repo), "repro", "train_teacher@resnet14"] if tool == "dvc"
               else [conftest.tool("snakemake", repo), "--cores", "1", "runs/teachers/resnet14/model.pt"])
    proc = subprocess.Popen(command, cwd=repo, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    _kill_when(repo / paths.state_file(paths.teacher_dir("resnet14")), proc)
    assert not (out / "model.pt").exists() and not (out / "metrics.json").exists()  # nothing half-written

    if tool == "snakemake":  # Snakemake itself was killed too: its documented recovery is --unlock
        run(["snakemake", "--unlock"], repo)
    rerun = ["dvc", "repro", "train_teacher@resnet14"] if tool == "dvc" else [
        "snakemake", "--cores", "1", "--rerun-incomplete", "runs/teachers/resnet14/model.pt"]
    log = run(rerun, repo)
    job_log = repo / "logs/train_teacher/resnet14.log"  # Snakemake sends each job's output to its log
    assert "resuming after epoch" in log.stdout + log.stderr + (job_log.read_text() if tool == "snakemake" else "")
    assert not (repo / paths.state_file(paths.teacher_dir("resnet14"))).exists()  # superseded by the result

    # the same stage, never interrupted, in a fresh copy
    fresh = make_repo(tmp_path / "fresh", override={"data": {"train_limit": 40, "test_limit": 8},
                                                    "train_teacher": {"epochs": 5, "milestones": [3]}})
    run(["dvc", "repro", "train_teacher@resnet14"], fresh)
    assert sha256_file(out / "model.pt") == sha256_file(fresh / "runs/teachers/resnet14/model.pt")
    timing = json.loads((repo / paths.timing_file(paths.teacher_dir("resnet14"))).read_text())
    assert timing["resumed_from_epoch"] >= 1
    for name in ("metrics.json", "log.csv"):  # wall-clock time lives outside the outputs: bytes are equal
        assert sha256_file(out / name) == sha256_file(fresh / "runs/teachers/resnet14" / name), name


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
    provenance = json.loads((repo / "runs/teachers/resnet14/provenance.json").read_text())
    assert provenance["imported"] is True and str(ckpt) in provenance["inputs_sha256"]
    saved = load_checkpoint(repo / "runs/teachers/resnet14/model.pt")["model"]
    assert all(torch.equal(saved[k], v) for k, v in published.state_dict().items())


def test_tools_come_from_the_environment_running_the_tests(tmp_path):
    """`make test VENV=<another env>`: a checkout whose .venv is not the environment running the tests
    (here a broken one) gets its tools from the running interpreter's bin, not from ./.venv/bin."""
    import sys

    broken = tmp_path / "other-env"
    (broken / "bin").mkdir(parents=True)
    for name in ("dvc", "snakemake", "r2kd"):
        (broken / "bin" / name).write_text("#!/bin/sh\necho 'the wrong environment' >&2\nexit 3\n")
        (broken / "bin" / name).chmod(0o755)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".venv").symlink_to(broken, target_is_directory=True)
    assert conftest.tool("snakemake", checkout) == str(Path(sys.executable).parent / "snakemake")
    result = run(["snakemake", "--version"], checkout)
    assert "wrong environment" not in result.stderr and result.stdout.strip()
    copy = make_repo(tmp_path / "copy", git=False)  # a copy links the running environment: README form
    assert conftest.tool("dvc", copy) == ".venv/bin/dvc"


class _OsWithFullDisk:
    """The os module as r2kd.lock sees it, on a full disk: every write fails with ENOSPC."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def write(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_writing_the_stage_lock_is_a_one_line_error(tmp_path, monkeypatch):
    from r2kd import lock

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(lock, "os", _OsWithFullDisk())
    ran = []
    with pytest.raises(UserError) as info:
        with lock.stage_lock("distill@p-kd-default-0"):
            ran.append(True)
    assert str(info.value) == ("cannot write the lock file .r2kd/locks/distill@p-kd-default-0.lock: "
                               "No space left on device")
    assert ran == [] and info.value.__cause__ is None and info.value.__suppress_context__
    monkeypatch.undo()
    with lock.stage_lock("distill@p-kd-default-0"):  # nothing left held: the next run takes the lock
        ran.append(True)
    assert ran == [True]


def test_lock_folder_that_cannot_be_made_is_a_one_line_error(tmp_path, monkeypatch):
    from r2kd import lock

    monkeypatch.chdir(tmp_path)
    Path(".r2kd").write_text("a file where the folder should be")
    with pytest.raises(UserError, match=r"^cannot create the lock file \.r2kd/locks/prepare\.lock: "):
        with lock.stage_lock("prepare"):
            pass


def test_cli_on_a_full_disk_for_the_lock_exits_2_without_traceback(tmp_path, small_fs):
    import sys

    repo = make_repo(tmp_path / "repo", git=False)
    disk = small_fs(repo / ".r2kd", size_kib=64)
    with open(disk / "filler", "wb", buffering=0) as fh:  # fill it
        with pytest.raises(OSError):
            while True:
                fh.write(b"\0" * 4096)
    result = subprocess.run([sys.executable, "-m", "r2kd", "prepare"], cwd=repo, env=env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "lock file .r2kd/locks/prepare.lock: No space left on device" in result.stderr
