"""r2kd/methods computes exactly what r2kd/losses + r2kd/distillers + r2kd/objective.py computed at
commit 57a9794 (before they were merged into one module per method): loss values, gradients and a
whole training step, bit for bit. The old code is read from git; outside a git checkout that holds
the commit, these tests skip.

The one intended difference: the old objective suffixed the augmented view's terms twice
(``value_aug_aug``); the new one names them once (``value_aug``).
"""

from __future__ import annotations

import copy
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from r2kd import models
from r2kd.methods import METHODS, make_method
from r2kd.methods import dist, dkd, kd, r2kd
from r2kd.methods._common import cross_entropy
from r2kd.methods.objective import DistillObjective

torch.set_num_threads(1)
OLD = "57a9794"
ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def old(tmp_path_factory):
    """The old modules as the package ``old_r2kd`` (losses, distillers, objective)."""
    try:
        names = _git("ls-tree", "--name-only", "-r", OLD, "r2kd/losses", "r2kd/distillers", "r2kd/objective.py").split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"commit {OLD} is not available (not a git checkout of this repository)")
    root = tmp_path_factory.mktemp("old")
    for name in names:
        text = _git("show", f"{OLD}:{name}")
        for package in ("losses", "distillers", "objective"):
            text = text.replace(f"r2kd.{package}", f"old_r2kd.{package}")
        target = root / "old_r2kd" / Path(name).relative_to("r2kd")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (root / "old_r2kd" / "__init__.py").write_text("")
    sys.path.insert(0, str(root))
    try:
        yield {m: importlib.import_module(f"old_r2kd.{m}") for m in ("losses", "distillers", "objective")}
    finally:
        sys.path.remove(str(root))
        for key in [k for k in sys.modules if k.startswith("old_r2kd")]:
            del sys.modules[key]


def _logits(seed: int, dtype: torch.dtype, b: int = 7, c: int = 11) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = (3 * torch.randn(b, c, generator=g)).to(dtype)
    t = (3 * torch.randn(b, c, generator=g)).to(dtype)
    p = (t + torch.randn(b, c, generator=g)).to(dtype)
    return s, t, p, torch.randint(0, c, (b,), generator=g)


def _value_and_grad(fn, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = s.detach().clone().requires_grad_()
    value = fn(s)
    grad = torch.autograd.grad(value, s)[0] if value.requires_grad else torch.zeros_like(s)
    return value.detach(), grad


PURE = {
    "cross_entropy": (lambda L, s, t, p, y: L.cross_entropy(s, y), lambda s, t, p, y: cross_entropy(s, y)),
    "kd": (lambda L, s, t, p, y: L.kd_loss(s, t, 4.0), lambda s, t, p, y: kd.kd_loss(s, t, 4.0)),
    "dist": (lambda L, s, t, p, y: L.dist_loss(s, t, 4.0, 2.0, 1.5), lambda s, t, p, y: dist.dist_loss(s, t, 4.0, 2.0, 1.5)),
    "dkd": (lambda L, s, t, p, y: L.dkd_loss(s, t, y, alpha=1.0, beta=8.0, temperature=4.0),
            lambda s, t, p, y: dkd.dkd_loss(s, t, y, alpha=1.0, beta=8.0, temperature=4.0)),
    "value": (lambda L, s, t, p, y: L.value_loss(s, L.mix_teacher_logits(t, p, 0.7), 4.0, 2.0),
              lambda s, t, p, y: r2kd.value_loss(s, r2kd.mix_teacher_logits(t, p, 0.7), 4.0, 2.0)),
    "rank_hard": (lambda L, s, t, p, y: L.rank_loss(s, t, 4.0, 2.0, "hard"), lambda s, t, p, y: r2kd.rank_loss(s, t, 4.0, 2.0, "hard")),
    "rank_soft": (lambda L, s, t, p, y: L.rank_loss(s, t, 4.0, 2.0, "soft", 5.0),
                  lambda s, t, p, y: r2kd.rank_loss(s, t, 4.0, 2.0, "soft", 5.0)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(PURE))
def test_pure_losses_and_gradients_are_unchanged(old, name, dtype):
    old_fn, new_fn = PURE[name]
    for seed in range(3):
        s, t, p, y = _logits(seed, dtype)
        v_old, g_old = _value_and_grad(lambda z: old_fn(old["losses"], z, t, p, y), s)
        v_new, g_new = _value_and_grad(lambda z: new_fn(z, t, p, y), s)
        assert torch.equal(v_old, v_new), (name, seed)
        assert torch.equal(g_old, g_new), (name, seed)


METHOD_PARAMS = [
    ("ce", {}), ("kd", {}), ("kd", {"ce_weight": 0.3, "kd_weight": 2.0, "temperature": 2.0}), ("dist", {}),
    ("dkd", {}), ("dkd", {"warmup": 0, "beta": 2.0}), ("r2kd", {}), ("r2kd", {"rank": "soft", "rank_sharpness": 3.0}),
    ("r2kd", {"alpha": 0.5, "beta": 1.5, "ce_weight": 0.7, "teacher_weight": 0.4}),
]


@pytest.mark.parametrize(("name", "params"), METHOD_PARAMS)
@pytest.mark.parametrize("clean", [True, False])
@pytest.mark.parametrize("epoch", [1, 30])
def test_method_terms_and_gradients_are_unchanged(old, name, params, clean, epoch):
    old_d = old["distillers"].make_distiller(name, params)
    new_m = make_method(name, params)
    s, t, p, y = _logits(epoch, torch.float32)
    kw = dict(teacher=t, pruned=p, labels=y, clean=clean, epoch=epoch)
    s_old, s_new = s.clone().requires_grad_(), s.clone().requires_grad_()
    out_old, out_new = old_d.losses(student=s_old, **kw), new_m.losses(student=s_new, **kw)
    assert list(out_old) == list(out_new)  # same names in the same order: the loop sums them in order
    for key in out_old:
        assert torch.equal(out_old[key], out_new[key]), key
    if out_old:
        (g_old,), (g_new,) = (torch.autograd.grad(sum(o.values()), z) for o, z in ((out_old, s_old), (out_new, s_new)))
        assert torch.equal(g_old, g_new)


def _net(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.create(name, 10, in_channels=1, input_size=8)


@pytest.mark.parametrize(("name", "params"), [
    ("ce", {"aug_view": "cutmix"}), ("kd", {"aug_view": "mixup"}), ("dist", {"aug_view": "cutout"}),
    ("dkd", {"aug_view": "cutmixpick"}), ("r2kd", {}), ("r2kd", {"aug_view": "none", "rank": "soft"}),
])
def test_training_steps_are_unchanged(old, name, params):
    """Three SGD steps of the objective: the same terms (modulo the old double suffix) and weights."""
    from r2kd.optim import SGD
    from r2kd.pruning import set_bn_mode

    teacher = _net("resnet14", 1).eval()
    pruned = set_bn_mode(_net("resnet14", 2), "train")
    student = _net("resnet8", 3).train()
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(3)]
    runs = []
    for side in ("old", "new"):
        s, pr = copy.deepcopy(student), copy.deepcopy(pruned)
        common = dict(teacher=teacher, pruned=pr, view_generator=torch.Generator().manual_seed(5), mean=[0.0], std=[1.0])
        if side == "old":
            d = old["distillers"].make_distiller(name, params)
            objective = old["objective"].DistillObjective(distiller=d, aug_view=d.aug_view, **common)
        else:
            objective = DistillObjective(method=make_method(name, params), **common)
        optimizer = SGD(s.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        logged = []
        for epoch, (x, y) in enumerate(batches, start=1):
            terms = objective(s, x, y, epoch)
            loss = sum(terms.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            logged.append({k.replace("_aug_aug", "_aug"): v.detach() for k, v in terms.items()})
        runs.append((logged, s.state_dict(), pr.state_dict()))
    (old_log, old_s, old_p), (new_log, new_s, new_p) = runs
    assert [list(r) for r in old_log] == [list(r) for r in new_log]
    for a, b in zip(old_log, new_log):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(old_s[k], new_s[k]) for k in old_s)
    assert all(torch.equal(old_p[k], new_p[k]) for k in old_p)  # the pruned teacher's BN statistics too


def test_every_method_was_compared(old):
    """Every method that existed at the old commit is compared; a method added since has nothing
    old to be compared with (its own tests check it against a reference: tests/test_losses.py)."""
    assert {n for n, _ in METHOD_PARAMS} == set(old["distillers"].DISTILLERS)
    assert set(old["distillers"].DISTILLERS) <= set(METHODS)
