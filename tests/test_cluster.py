"""Presets, Snakemake resources and the SLURM profile (dry runs), a CUDA smoke test, failed jobs'
logs, and the pipeline on a real SLURM cluster (opt-in: `make slurm-test`; skipped without one)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

import conftest
from conftest import REPO, env, make_repo, run
from r2kd import paths
from r2kd.config import load_params

PRESETS = sorted((REPO / "r2kd/presets").glob("*.yaml"))


# the published recipe of each preset: (distill epochs, distill milestones)
RECIPES = {"cifar100": (240, [150, 180, 210]), "tiny_imagenet": (240, [150, 180, 210]), "imagenet": (100, [30, 60, 90]),
           "ablation": (6, [4, 5])}  # the ablation runs on the default digits recipe, on the CPU
TEACHER_RECIPES = {**RECIPES, "ablation": (20, [12, 16])}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_presets_are_valid(preset):
    params = load_params(preset)
    assert (params.distill.epochs, params.distill.milestones) == RECIPES[preset.stem]
    if all(source.pretrained is None for source in params.teachers.values()):
        assert (params.train_teacher.epochs, params.train_teacher.milestones) == TEACHER_RECIPES[preset.stem]
    assert params.resources_for("distill").gpu == (0 if preset.stem == "ablation" else 1)


def test_preset_command_writes_params(tmp_path):
    repo = make_repo(tmp_path / "repo", git=False)
    run(["r2kd", "preset", "cifar100"], repo)
    assert (repo / "params.yaml").read_text() == (REPO / "r2kd/presets/cifar100.yaml").read_text()
    bad = run(["r2kd", "preset", "imagenet22k"], repo, check=False)
    assert bad.returncode == 2 and "cifar100" in bad.stderr


@pytest.mark.slow
def test_slurm_profile_dry_run_resolves_every_job(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    repo = make_repo(tmp_path / "repo")
    run(["r2kd", "preset", "cifar100"], repo)
    out = run(["snakemake", "--workflow-profile", "workflow/profiles/slurm", "--dry-run"], repo)
    text = out.stdout + out.stderr
    jobs = {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", text, re.M)}  # the job stats table
    assert jobs["distill"] == 4 * 5 * 2 * 3
    assert jobs["train_teacher"] == 4 and jobs["prune"] == 4 and jobs["pair"] == 4
    blocks = re.findall(r"^rule distill:\n(.*?)\n\n", text, re.M | re.S)
    assert len(blocks) == 4 * 5 * 2 * 3, text[-2000:]
    for block in blocks:
        assert re.search(r"resources: .*gpu=1", block) and "runtime=720" in block and "mem_mb=16000" in block


def test_local_resources_come_from_params(tiny_repo):
    (tiny_repo / "params.yaml").write_text((tiny_repo / "params.yaml").read_text().replace(
        "resources:\n  default:", "resources:\n  distill:\n    gpu: 1\n    mem_mb: 1234\n    runtime: 5\n  default:"))
    text = run(["snakemake", "--dry-run", "--forceall", "--cores", "4", "--resources", "gpu=1"], tiny_repo).stdout
    distill = re.findall(r"^rule distill:\n(.*?)\n\n", text, re.M | re.S)
    assert distill and all("gpu=1" in b and "mem_mb=1234" in b for b in distill)
    teacher = re.findall(r"^rule train_teacher:\n(.*?)\n\n", text, re.M | re.S)
    assert teacher and all("gpu=0" in b for b in teacher)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_smoke(tmp_path):
    from r2kd import models
    from r2kd.config import TrainRecipe
    from r2kd.data.loader import BatchIterator
    from r2kd.runtime import resolve_device
    from r2kd.train import Trainer, cross_entropy_objective

    device = resolve_device("auto")
    assert device.type == "cuda"
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (128, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (128,), generator=g)
    common = dict(batch_size=32, mean=[0.5] * 3, std=[0.25] * 3, device=device)
    train = BatchIterator(images, labels, train=True, generator=g, crop_padding=4, hflip=True, **common)
    test = BatchIterator(images, labels, train=False, generator=None, **common)
    model = models.create("resnet8x4", 10).to(device)
    for amp in ("none", "bf16"):
        result = Trainer(model=model, recipe=TrainRecipe(epochs=1, batch_size=32, lr=0.01, momentum=0.9, weight_decay=0),
                         train_batches=train, test_batches=test, objective=cross_entropy_objective,
                         generators={"data": g}, state_path=tmp_path / amp / "s.pt", fingerprint=amp, label=amp,
                         amp=amp).fit()
        assert 0 <= result.last["test_top1"] <= 100
    assert next(model.parameters()).is_cuda


# --- failed jobs show their log -------------------------------------------------------------------

LAST_LINE = "r2kd-test: the last line of the failed job's log"
PREPARED = ["data/prepared/train.pt", "data/prepared/test.pt", "data/prepared/meta.json"]  # the first job's


def failing_python(folder: Path) -> dict[str, str]:
    """An environment whose stage commands fail (R2KD_PYTHON: workflow/scripts/r2kd runs it as the
    interpreter), each leaving a log whose last line is LAST_LINE."""
    script = folder / "failing-python"
    script.write_text(f'#!/bin/sh\necho "r2kd-test: stage $3 starts"\necho "{LAST_LINE}"\nexit 1\n')
    script.chmod(0o755)
    return {**env(), "R2KD_PYTHON": str(script)}


def assert_log_shown(result: subprocess.CompletedProcess) -> None:
    console = result.stdout + result.stderr
    assert result.returncode != 0, console[-3000:]
    assert "Logfile logs/prepare.log:" in console, console[-3000:]
    shown = console.split("Logfile logs/prepare.log:", 1)[1]
    assert "r2kd-test: stage prepare starts" in shown and LAST_LINE in shown, console[-3000:]


@pytest.mark.slow
def test_a_failed_local_job_shows_its_log(tmp_path):
    """The Snakefile turns on --show-failed-logs (no profile needed): the error ends with the log."""
    repo = make_repo(tmp_path / "repo", git=False)
    result = subprocess.run([conftest.tool("snakemake", repo), "--cores", "1", *PREPARED], cwd=repo,
                            env=failing_python(tmp_path), capture_output=True, text=True, timeout=300)
    assert_log_shown(result)


# --- a real SLURM cluster ---------------------------------------------------------------------------

# The tiny pipeline, with a teacher slow enough (0.2 s an epoch on 2 cores: 10 s) to requeue mid-training.
SLOW_TEACHER = {"train_teacher": {"epochs": 50, "milestones": [25]}}
# sacct every 2 s rather than the plugin's 40 s (then +10 s per check that finds nothing finished)
SLURM = ["--workflow-profile", "workflow/profiles/slurm", "--slurm-init-seconds-before-status-checks", "2"]


def cluster_or_skip() -> None:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        pytest.skip("no SLURM here (sbatch/sinfo not on PATH); `make slurm-test` installs and starts a "
                    "one-node cluster (workflow/scripts/slurm-local) and runs these tests")
    pytest.importorskip("snakemake_executor_plugin_slurm")
    try:
        answer = subprocess.run(["sinfo", "-h", "-o", "%a %T"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.skip("the SLURM cluster does not answer (sinfo timed out)")
    if answer.returncode != 0 or "up" not in answer.stdout:
        pytest.skip(f"the SLURM cluster does not answer (sinfo: {(answer.stderr or answer.stdout).strip()[:200]})")


def slurm_jobs(repo: Path, *squeue_args: str) -> list[tuple[str, str]]:
    """(job id, comment) of this checkout's jobs in the queue; the executor's comment names the rule."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%k|%Z", *squeue_args], capture_output=True, text=True).stdout
    rows = [line.split("|") for line in out.splitlines() if line.count("|") == 2]
    return [(job, comment) for job, comment, workdir in rows if Path(workdir) == repo]


def last_epoch(log: Path) -> int:
    done = re.findall(r"epoch (\d+)/\d+", log.read_text() if log.exists() else "")
    return int(done[-1]) if done else 0


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    """The pipeline through SLURM, its train_teacher job requeued (`scontrol requeue`, what a
    preemption does) once it has finished an epoch; the same config under `snakemake --cores 2`
    runs alongside (so the wait for sacct overlaps its work)."""
    cluster_or_skip()
    base = tmp_path_factory.mktemp("cluster")
    local, cluster = make_repo(base / "local", SLOW_TEACHER), make_repo(base / "slurm", SLOW_TEACHER)
    began = time.time()
    with open(base / "local.out", "w") as local_out, open(base / "slurm.out", "w") as slurm_out:
        local_run = subprocess.Popen([conftest.tool("snakemake", local), "--cores", "2"], cwd=local, env=env(),
                                     stdout=local_out, stderr=subprocess.STDOUT)
        slurm_run = subprocess.Popen([conftest.tool("snakemake", cluster), *SLURM], cwd=cluster, env=env(),
                                     stdout=slurm_out, stderr=subprocess.STDOUT)
        state = cluster / paths.state_file(paths.teacher_dir("resnet14"))
        job_log = cluster / "logs/train_teacher/resnet14.log"
        requeue = {}
        try:
            while slurm_run.poll() is None and time.time() < began + 1200:
                if not requeue and state.exists():
                    teacher = [job for job, comment in slurm_jobs(cluster, "-t", "RUNNING")
                               if comment.startswith("rule_train_teacher")]
                    if teacher:
                        requeue = {"job": teacher[0], "epoch": last_epoch(job_log),
                                   "notes": sorted(p.name for p in (cluster / ".r2kd/unrecorded").glob("*"))}
                        subprocess.run(["scontrol", "requeue", teacher[0]], check=True)
                elif requeue and not requeue.get("released"):  # a requeued job waits 2 min (slurm.conf's
                    # AuthInfo cred_expire) before it may start again: let it start now
                    pending = subprocess.run(["squeue", "-h", "-j", requeue["job"], "-t", "PENDING", "-o", "%r"],
                                             capture_output=True, text=True).stdout
                    if "BeginTime" in pending:
                        update = ["scontrol", "update", f"JobId={requeue['job']}", "StartTime=now"]
                        requeue["released"] = subprocess.run(update).returncode == 0
                time.sleep(0.2)
        finally:
            for proc in (slurm_run, local_run):
                try:
                    proc.wait(timeout=max(1, began + 1200 - time.time()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    subprocess.run(["scancel", *[job for job, _ in slurm_jobs(cluster)]], check=False)
    wall = time.time() - began
    console = (base / "slurm.out").read_text()
    assert slurm_run.returncode == 0, console[-5000:]
    assert local_run.returncode == 0, (base / "local.out").read_text()[-5000:]
    # (SLURM job id, rule) of every job Snakemake submitted, and SLURM's record of each run of them
    submitted = dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: \S+/slurm_logs/rule_(\w+)/", console))
    accounting = subprocess.run(["sacct", "-n", "-P", "-X", "--duplicates", "-j", ",".join(submitted) or "0",
                                 "-o", "jobid,state"], capture_output=True, text=True).stdout
    runs = [tuple(row.split("|")) for row in accounting.splitlines() if row.count("|") == 1]
    print(f"\nSLURM run: {len(submitted)} jobs submitted, {len(runs)} SLURM job records, {wall:.0f} s wall "
          f"(with the local run alongside); requeue: {requeue}")
    return {"local": local, "cluster": cluster, "console": console, "requeue": requeue, "submitted": submitted,
            "runs": runs, "wall": wall}


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_run_gives_the_local_bytes(slurm_run):
    from test_pipeline import comparable, outputs

    local, cluster = outputs(slurm_run["local"]), outputs(slurm_run["cluster"])
    assert sorted(local) == sorted(cluster) and "reports/summary.json" in local
    different = [rel for rel in local if comparable(local[rel]) != comparable(cluster[rel])]
    assert not different, different
    rules = sorted(slurm_run["submitted"].values())  # every job but `all` went through sbatch
    # prepare, teacher, prune, 2 pairs and their pins, 4 students alone, 2 cohorts, corrupt, evaluate, export, report
    assert len(rules) == 17 and rules.count("distill") == 4 and rules.count("distill_cohort") == 2, rules
    assert rules.count("train_teacher") == 1 and rules.count("pair_pruned") == 2, rules
    assert sorted(state for _, state in slurm_run["runs"]) == ["COMPLETED"] * 17 + ["REQUEUED"], slurm_run["runs"]
    assert "localrule all" in slurm_run["console"] and "rule distill" in slurm_run["console"]


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_requeued_job_resumes_from_its_last_epoch(slurm_run):
    requeue = slurm_run["requeue"]
    assert requeue, "the train_teacher job was never seen running"
    log = (slurm_run["cluster"] / "logs/train_teacher/resnet14.log").read_text()
    resumed = re.search(r"resuming after epoch (\d+)", log)
    assert resumed, log[-3000:]
    # it resumed from an epoch it had finished when requeued (or one more, finished before the kill)
    assert requeue["epoch"] <= int(resumed.group(1)) < SLOW_TEACHER["train_teacher"]["epochs"], (requeue, log[:500])
    states = sorted(state for job, state in slurm_run["runs"] if job == requeue["job"])
    assert states == ["COMPLETED", "REQUEUED"], slurm_run["runs"]  # one job, two runs (SLURM's records)
    for name in ("model.pt", "log.csv", "metrics.json", "provenance.json"):  # the bytes of an uninterrupted run
        rel = f"runs/teachers/resnet14/{name}"
        assert (slurm_run["cluster"] / rel).read_bytes() == (slurm_run["local"] / rel).read_bytes(), rel


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_jobs_results_enter_dvc(slurm_run):
    """The jobs' notes (r2kd/handoff.py) land in the shared checkout; the hooks, run by the
    submitting Snakemake, record them in dvc.lock at the end, as after a local run."""
    cluster, local = slurm_run["cluster"], slurm_run["local"]
    assert "prepare" in slurm_run["requeue"]["notes"]  # written by the SLURM job that ran prepare
    assert not list((cluster / ".r2kd/unrecorded").glob("*"))
    import yaml

    stages = [sorted(yaml.safe_load((repo / "dvc.lock").read_text())["stages"]) for repo in (local, cluster)]
    assert stages[0] == stages[1] and "distill@resnet14-resnet8-r2kd-default-0" in stages[1]
    status = run(["dvc", "status"], cluster)
    assert "up to date" in status.stdout, status.stdout


@pytest.mark.slow
@pytest.mark.slurm
def test_a_failed_slurm_job_shows_its_log(tmp_path):
    cluster_or_skip()
    repo = make_repo(tmp_path / "repo", git=False)
    result = subprocess.run([conftest.tool("snakemake", repo), *SLURM, "--retries", "0", *PREPARED], cwd=repo,
                            env=failing_python(tmp_path), capture_output=True, text=True, timeout=600)
    assert_log_shown(result)
