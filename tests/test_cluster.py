"""Presets, Snakemake resources and the SLURM profile (dry runs), and a CUDA smoke test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from conftest import REPO, make_repo, run
from r2kd.config import load_params

PRESETS = sorted((REPO / "r2kd/presets").glob("*.yaml"))


# the published recipe of each preset: (distill epochs, distill milestones)
RECIPES = {"cifar100": (240, [150, 180, 210]), "tiny_imagenet": (240, [150, 180, 210]), "imagenet": (100, [30, 60, 90])}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_presets_are_valid(preset):
    params = load_params(preset)
    assert (params.distill.epochs, params.distill.milestones) == RECIPES[preset.stem]
    if all(source.pretrained is None for source in params.teachers.values()):
        assert (params.train_teacher.epochs, params.train_teacher.milestones) == RECIPES[preset.stem]
    assert params.resources_for("distill").gpu == 1


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
