"""Speed-ups of the training step (docs/performance.md).

- Bit-identical ones (always on): frozen passes run under inference_mode, R2KD computes each
  softmax once, SGD uses multi-tensor ops. (The eval-mode teacher's two views as one batch would be
  bit-identical on the CPU too, checked below, but it is slower there, so only CUDA's fast path
  uses it.) Checked here against a plain step written the old way (separate
  no_grad forwards, value_loss + rank_loss, a per-parameter SGD loop): same losses, gradients and
  weights, bit for bit. tests/test_method_numerics.py compares with the code of commit 57a9794.
- ``runtime.fast_path`` (channels_last; on CUDA also the teacher's and the pruned teacher's views
  batched) may change rounding: the same loss trajectory to float tolerance over 50 SGD steps; the default (auto) is on for CUDA only.
"""

from __future__ import annotations

import copy

import pytest
import torch

from r2kd import models
from r2kd.config import Params, PruneConfig, Runtime
from r2kd.methods import make_method
from r2kd.methods.objective import DistillObjective
from r2kd.methods.r2kd import r2kd_terms, rank_loss, value_loss
from r2kd.optim import SGD
from r2kd.pruning import prune_teacher, set_bn_mode
from r2kd.runtime import fast_layout, fast_path_enabled


def _net(name: str, seed: int, classes: int = 10, channels: int = 1, size: int = 8) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.create(name, classes, in_channels=channels, input_size=size)


@pytest.mark.parametrize(("name", "channels", "size"), [
    ("resnet8", 1, 8), ("wrn_16_2", 1, 8), ("vgg8", 3, 32), ("resnet8x4", 3, 32), ("MobileNetV2", 3, 32),
    ("ShuffleV2", 3, 32),
])
@pytest.mark.parametrize("threads", [1, 2])
def test_eval_teacher_on_both_views_as_one_batch_is_bit_identical_on_cpu(name, channels, size, threads):
    torch.set_num_threads(threads)
    net = set_bn_mode(_net(name, 0, 100, channels, size), "eval")
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(2, 64, channels, size, size, generator=g)
    with torch.no_grad():
        separate = torch.cat([net(x), net(v)])
        batched = net(torch.cat([x, v]))
    assert torch.equal(separate, batched)


@pytest.mark.parametrize(("name", "channels", "size"), [
    ("resnet8", 1, 8), ("wrn_16_2", 1, 8), ("vgg8", 3, 32), ("resnet8x4", 3, 32), ("MobileNetV2", 3, 32),
    ("ShuffleV2", 3, 32),
])
@pytest.mark.parametrize("threads", [1, 2])
def test_train_mode_batch_norm_keeps_each_views_statistics_in_one_pass(name, channels, size, threads):
    """The pruned teacher (train-mode BatchNorm) on both views as one pass, each view normalised by
    its own statistics: the logits and the running statistics of a pass per view, bit for bit."""
    from r2kd.methods.objective import only_batch_norm_trains, per_view_statistics
    from r2kd.parallel import FrozenGlobalBatch

    torch.set_num_threads(threads)
    net = set_bn_mode(_net(name, 0, 100, channels, size), "train")
    twin = copy.deepcopy(net)
    assert only_batch_norm_trains(net) and not only_batch_norm_trains(FrozenGlobalBatch(net))
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(2, 64, channels, size, size, generator=g) * torch.tensor([1.0, 3.0]).view(2, 1, 1, 1, 1)
    with torch.inference_mode():
        separate = torch.cat([twin(x), twin(v)])
        with per_view_statistics(net, 2):
            batched = net(torch.cat([x, v]))
        whole = copy.deepcopy(twin)(torch.cat([x, v]))
    assert torch.equal(separate, batched)
    assert not torch.allclose(whole, separate)  # one batch's statistics for both views: not the same
    for (key, a), b in zip(net.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), key  # running statistics updated clean half first, as two passes do
    assert not any("forward" in vars(m) for m in net.modules())  # the class's forward again


def test_the_fast_step_runs_the_pruned_teacher_once_per_step_with_the_same_terms(monkeypatch):
    """What CUDA's fast path does, run on the CPU: one pruned-teacher pass over clean + view, the
    terms of two passes bit for bit."""
    def step(batched: bool) -> tuple[dict, int, dict]:
        monkeypatch.setattr(DistillObjective, "batch_views_on", ("cuda", "cpu") if batched else ("cuda",))
        teacher = set_bn_mode(_net("wrn_16_2", 1), "eval")
        pruned = set_bn_mode(_net("wrn_16_2", 2), "train")
        student = _net("resnet8", 3).train()
        passes = []
        pruned.register_forward_hook(lambda *_: passes.append(1))
        objective = DistillObjective(method=make_method("r2kd"), teacher=teacher, pruned=pruned,
                                     view_generator=torch.Generator().manual_seed(5), mean=[0.0], std=[1.0],
                                     fast=True)
        g = torch.Generator().manual_seed(6)
        x, y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)
        terms = {k: v.detach() for k, v in objective(student, x, y, 1).items()}
        return terms, len(passes), pruned.state_dict()

    (plain, plain_passes, plain_state), (fast, fast_passes, fast_state) = step(False), step(True)
    assert (plain_passes, fast_passes) == (2, 1)
    assert plain.keys() == fast.keys() and all(torch.equal(plain[k], fast[k]) for k in plain)
    assert all(torch.equal(plain_state[k], fast_state[k]) for k in plain_state)


def test_r2kd_terms_equal_value_and_rank_loss_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        s = (3 * torch.randn(64, 100, generator=g)).to(dtype)
        t = (3 * torch.randn(64, 100, generator=g)).to(dtype)
        a, b = s.clone().requires_grad_(), s.clone().requires_grad_()
        old = (value_loss(a, t, 4.0, 2.0), rank_loss(a, t, 4.0, 2.0, "hard"))
        new = r2kd_terms(b, t, 4.0, 2.0, 2.0, "hard")
        assert all(torch.equal(o, n) for o, n in zip(old, new))
        (ga,), (gb,) = torch.autograd.grad(sum(old), a), torch.autograd.grad(sum(new), b)
        assert torch.equal(ga, gb)


class _PlainSGD:
    """The per-parameter loop r2kd.optim.SGD used before its multi-tensor step."""

    def __init__(self, params, lr, momentum, weight_decay):
        self.params, self.lr, self.m, self.wd = list(params), lr, momentum, weight_decay
        self.bufs = [None] * len(self.params)

    @torch.no_grad()
    def step(self):
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            d = p.grad.add(p, alpha=self.wd)
            if self.bufs[i] is None:
                self.bufs[i] = d.clone()
            else:
                self.bufs[i].mul_(self.m).add_(d)
            p.add_(self.bufs[i], alpha=-self.lr)


def _plain_step(student, teacher, pruned, x, y, view_x, opt):
    """The step as it was written before: every network separately on each view, under no_grad."""
    from r2kd.methods._common import cross_entropy
    from r2kd.methods.r2kd import mix_teacher_logits

    terms = []
    for xx, clean in ((x, True), (view_x, False)):
        with torch.no_grad():
            z_t, z_p = teacher(xx), pruned(xx)
        z_s = student(xx)
        tgt = mix_teacher_logits(z_t, z_p, 0.7)
        terms += ([cross_entropy(z_s, y)] if clean else []) + [value_loss(z_s, tgt, 4.0, 2.0), rank_loss(z_s, tgt, 4.0, 2.0)]
    loss = sum(terms)
    for p in student.parameters():
        p.grad = None
    loss.backward()
    grads = [p.grad.clone() for p in student.parameters()]
    opt.step()
    return [t.detach() for t in terms], grads


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("prune_method", ["l1_unstructured", "none"])
def test_r2kd_step_is_bit_identical_to_the_plain_step(prune_method, device, request):
    """Five SGD steps: the same terms, gradients, weights and pruned-teacher BN statistics (on CUDA
    with the default settings: separate teacher passes, inference_mode, multi-tensor SGD, and
    runtime.deterministic's deterministic kernels)."""
    if device == "cuda":
        request.getfixturevalue("cuda_deterministic")
    device = torch.device(device)
    teacher = set_bn_mode(_net("wrn_16_2", 1), "eval")
    if prune_method == "none":
        pruned = set_bn_mode(_net("resnet14", 2), "train")
    else:
        pruned = set_bn_mode(prune_teacher(copy.deepcopy(teacher), torch.zeros(2, 1, 8, 8),
                                           PruneConfig(method=prune_method)).model, "train")
    teacher, pruned, student = teacher.to(device), pruned.to(device), _net("resnet8", 3).train().to(device)
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randn(32, 1, 8, 8, generator=g).to(device), torch.randint(0, 10, (32,), generator=g).to(device))
               for _ in range(5)]
    s_new, p_new = copy.deepcopy(student), copy.deepcopy(pruned)
    s_old, p_old = copy.deepcopy(student), copy.deepcopy(pruned)
    objective = DistillObjective(method=make_method("r2kd"), teacher=teacher, pruned=p_new,
                                 view_generator=torch.Generator().manual_seed(5), mean=[0.0], std=[1.0])
    views = DistillObjective(method=make_method("r2kd"), teacher=None, pruned=None,
                             view_generator=torch.Generator().manual_seed(5), mean=[0.0], std=[1.0])
    opt_new = SGD(s_new.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    opt_old = _PlainSGD(s_old.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for x, y in batches:
        terms = objective(s_new, x, y, 1)
        loss = sum(terms.values())
        opt_new.zero_grad()
        loss.backward()
        grads_new = [p.grad.clone() for p in s_new.parameters()]
        opt_new.step()
        view_x = views._view("cutmix", x, None).x
        old_terms, grads_old = _plain_step(s_old, teacher, p_old, x, y, view_x, opt_old)
        assert all(torch.equal(a, b) for a, b in zip(old_terms, terms.values()))
        assert all(torch.equal(a, b) for a, b in zip(grads_old, grads_new))
    for a, b in ((s_old, s_new), (p_old, p_new)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fast_path_is_off_on_cpu_by_default():
    assert Runtime().fast_path == "auto"  # on for CUDA only: CPU runs keep their bits
    assert not fast_path_enabled("auto", torch.device("cpu"))
    assert fast_path_enabled("auto", torch.device("cuda"))
    assert fast_path_enabled("always", torch.device("cpu")) and not fast_path_enabled("never", torch.device("cuda"))
    assert "fast_path" in Params.model_json_schema()["$defs"]["Runtime"]["properties"]


def _trajectory(fast: bool, device: torch.device, steps: int) -> list[float]:
    teacher = set_bn_mode(_net("wrn_16_2", 1), "eval").to(device)
    pruned = set_bn_mode(_net("wrn_16_2", 2), "train").to(device)
    student = _net("resnet8", 3).train().to(device)
    if fast:
        teacher, pruned, student = (fast_layout(m) for m in (teacher, pruned, student))
    objective = DistillObjective(method=make_method("r2kd"), teacher=teacher, pruned=pruned,
                                 view_generator=torch.Generator().manual_seed(5), mean=[0.0], std=[1.0], fast=fast)
    opt = SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(6)
    centres = torch.randn(10, 1, 8, 8, generator=g)
    losses = []
    for _ in range(steps):
        y = torch.randint(0, 10, (64,), generator=g)
        x = (centres[y] + 0.5 * torch.randn(64, 1, 8, 8, generator=g)).to(device)
        terms = objective(student, x, y.to(device), 1)
        loss = sum(terms.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        # The hard rank terms are gradient-free step functions of the logits' order: a rounding-level
        # change can swap two classes and move them by ~1e-3 at once. The trajectory compared is
        # that of the terms that train the student.
        losses.append(float(sum(v.detach() for k, v in terms.items() if not k.startswith("rank"))))
    return losses


def _assert_same_trajectory(eager: list[float], fast: list[float]) -> None:
    eager_t, fast_t = torch.tensor(eager), torch.tensor(fast)
    assert torch.isfinite(fast_t).all()
    assert eager_t[-10:].mean() < eager_t[:10].mean()  # it trains
    # float rounding only: the trajectories stay together over 50 steps of a chaotic process
    assert torch.allclose(eager_t, fast_t, rtol=2e-3, atol=1e-4), ((eager_t - fast_t).abs() / eager_t).max()


def test_fast_path_follows_the_eager_loss_trajectory_on_cpu():
    _assert_same_trajectory(_trajectory(False, torch.device("cpu"), 50), _trajectory(True, torch.device("cpu"), 50))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fast_path_follows_the_eager_loss_trajectory_on_cuda():
    """On CUDA the fast path also batches the teacher's two views (cuDNN may round differently)."""
    device = torch.device("cuda")
    _assert_same_trajectory(_trajectory(False, device, 50), _trajectory(True, device, 50))
