"""runtime.overlap: on the CPU the frozen teachers' passes run on their own threads beside
the student's, and an R2KD step backpropagates each view on its own thread
(r2kd/overlap.py). Only which thread computes a value changes, so every step must
give the serial step's terms, gradients, weights and pruned-teacher statistics, bit for bit."""

from __future__ import annotations

import copy

import pytest
import torch

from r2kd import models
from r2kd.config import PruneConfig, Runtime
from r2kd.methods import make_method
from r2kd import overlap as ft
from r2kd.methods.objective import DistillObjective
from r2kd.optim import SGD
from r2kd.pruning import prune_teacher, set_bn_mode
from r2kd.runtime import fast_layout
from r2kd.train import TrainStep, _with_next

NETS = {  # teacher, student, channels, side, classes
    "default": ("wrn_16_2", "resnet8", 1, 8, 10),
    "cifar": ("resnet14", "resnet8x4", 3, 16, 100),
    "mobile": ("vgg8", "MobileNetV2", 3, 16, 100),
}


def _setup(nets: str):
    t_name, s_name, ch, side, classes = NETS[nets]
    torch.manual_seed(0)
    teacher = set_bn_mode(models.create(t_name, classes, in_channels=ch, input_size=side), "eval")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, ch, side, side, generator=g)
    y = torch.randint(0, classes, (32,), generator=g)
    pruned = set_bn_mode(prune_teacher(copy.deepcopy(teacher), x[:2], PruneConfig()).model, "train")
    student = models.create(s_name, classes, in_channels=ch, input_size=side).train()
    return teacher, pruned, student, x, y, ch


def _run(method: str, params: dict, nets: str, overlap: list[str] | None, amp: str = "none", steps: int = 3,
         fast: bool = False):
    """``steps`` TrainSteps (the Trainer's step); the terms of each, then the grads of the last step,
    the student's and the pruned teacher's state."""
    teacher, pruned, student, x, y, ch = _setup(nets)
    if fast:  # runtime.fast_path: always on the CPU (channels_last everywhere)
        teacher, pruned, student = (fast_layout(m) for m in (teacher, pruned, student))
    threads = ft.FrozenThreads(overlap, torch.get_num_threads()) if overlap else None
    objective = DistillObjective(method=make_method(method, params), teacher=teacher, pruned=pruned,
                                 view_generator=torch.Generator().manual_seed(2), mean=[0.0] * ch, std=[1.0] * ch,
                                 frozen_threads=threads, fast=fast)
    opt = SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    step = TrainStep(student, objective, opt, torch.amp.GradScaler("cpu", enabled=False), amp, torch.device("cpu"))
    step.begin_epoch(1)
    seen = []
    # As the training loop drives it: each step is told the next batch's images first (lookahead).
    batches = [(x + 0.1 * i, y) for i in range(steps)]
    for images, labels, following in _with_next(batches, step.looks_ahead):
        if step.looks_ahead:
            step.upcoming(following)
        step(images, labels, 2)
        seen.append({k: v.detach().clone() for k, v in step.term_sums.items()})
    grads = [p.grad.clone() for p in student.parameters()]
    if threads is not None:
        threads.close()
    return seen, grads, student.state_dict(), pruned.state_dict(), objective


def _same(a, b) -> None:
    terms_a, grads_a, student_a, pruned_a, _ = a
    terms_b, grads_b, student_b, pruned_b, _ = b
    assert len(terms_a) == len(terms_b)
    assert all(ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta) for ta, tb in zip(terms_a, terms_b))
    assert all(torch.equal(ga, gb) for ga, gb in zip(grads_a, grads_b))
    for state_a, state_b in ((student_a, student_b), (pruned_a, pruned_b)):
        assert state_a.keys() == state_b.keys()
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a), [k for k in state_a
                                                                            if not torch.equal(state_a[k], state_b[k])]


@pytest.mark.parametrize(("method", "params"), [
    ("r2kd", {"aug_view": "cutmix"}), ("r2kd", {"aug_view": "cutmixpick"}), ("r2kd", {"aug_view": "mixup"}),
    ("kd", {}), ("dkd", {"warmup": 1}), ("dist", {"aug_view": "cutout"}),
])
@pytest.mark.parametrize("overlap", [["pruned"], ["pruned", "teacher"]], ids=["one thread", "two threads"])
def test_overlapped_steps_are_the_serial_steps_bit_for_bit(method, params, overlap):
    serial = _run(method, params, "default", None)
    overlapped = _run(method, params, "default", overlap)
    _same(serial, overlapped)


@pytest.mark.parametrize("nets", ["cifar", "mobile"])
@pytest.mark.parametrize("threads", [1, 2])
def test_other_networks_and_intra_op_threads(nets, threads):
    torch.set_num_threads(threads)  # conftest restores it
    _same(_run("r2kd", {"aug_view": "cutmix"}, nets, None, steps=2),
          _run("r2kd", {"aug_view": "cutmix"}, nets, ["pruned"], steps=2))


def test_the_cpu_fast_path_overlapped_is_the_cpu_fast_path():
    """fast_path: always on the CPU (channels_last) with overlap: the fast path's own numbers."""
    _same(_run("r2kd", {"aug_view": "cutmix"}, "default", None, fast=True),
          _run("r2kd", {"aug_view": "cutmix"}, "default", ["pruned"], fast=True))


def test_autocast_reaches_the_frozen_threads():
    """autocast is thread-local in torch: a bf16 run must run its frozen passes in bf16 too."""
    serial = _run("r2kd", {"aug_view": "cutmix"}, "default", None, amp="bf16", steps=2)
    overlapped = _run("r2kd", {"aug_view": "cutmix"}, "default", ["pruned", "teacher"], amp="bf16", steps=2)
    _same(serial, overlapped)
    fp32 = _run("r2kd", {"aug_view": "cutmix"}, "default", ["pruned", "teacher"], steps=2)
    assert not torch.equal(fp32[0][0]["ce"], overlapped[0][0]["ce"])  # bf16 did change the numbers


@pytest.mark.parametrize("student_name", models.available())
def test_every_student_gets_the_one_pass_gradients_from_the_split_backward(student_name):
    """The split backward's premise (the two views' passes share no node but the parameters) for
    every registered architecture: its gradients against one backward pass over the same graph."""
    torch.manual_seed(0)
    teacher = set_bn_mode(models.create("resnet8", 10, input_size=16), "eval")
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    pruned = set_bn_mode(prune_teacher(copy.deepcopy(teacher), x[:2], PruneConfig()).model, "train")
    student = models.create(student_name, 10, input_size=16).train()
    threads = ft.FrozenThreads(["pruned"], 1)
    objective = DistillObjective(method=make_method("r2kd", {"aug_view": "cutmix"}), teacher=teacher, pruned=pruned,
                                 view_generator=torch.Generator().manual_seed(2), mean=[0.0] * 3, std=[1.0] * 3,
                                 frozen_threads=threads)
    terms = objective(student, x, y, 1)
    params = [p for p in student.parameters() if p.requires_grad]
    one_pass = torch.autograd.grad(sum(terms.values()), params, retain_graph=True)
    assert objective.backward(terms, student)
    assert all(torch.equal(p.grad, g) for p, g in zip(params, one_pass))
    threads.close()


def test_the_backward_pass_is_split_by_view(monkeypatch):
    """The view's backward pass runs on a frozen network's thread, the clean one on the caller's."""
    import threading

    from r2kd.methods import objective as obj

    where = []
    real = obj._grads

    def spy(terms, params):
        where.append(threading.current_thread().name)
        return real(terms, params)

    monkeypatch.setattr(obj, "_grads", spy)
    _run("r2kd", {"aug_view": "cutmix"}, "default", ["pruned"], steps=1)
    assert sorted(where) == ["MainThread", "r2kd-pruned_0"]
    where.clear()
    _run("kd", {}, "default", ["teacher"], steps=1)  # no view: one ordinary backward pass
    assert where == []


def test_a_failed_step_leaves_no_pass_waiting_and_the_next_step_runs(monkeypatch):
    teacher, pruned, student, x, y, ch = _setup("default")
    threads = ft.FrozenThreads(["pruned"], 1)
    objective = DistillObjective(method=make_method("r2kd", {"aug_view": "cutmix"}), teacher=teacher, pruned=pruned,
                                 view_generator=torch.Generator().manual_seed(2), mean=[0.0], std=[1.0],
                                 frozen_threads=threads)
    real = objective._view

    def broken(*args, **kwargs):
        raise ValueError("view failed")

    monkeypatch.setattr(objective, "_view", broken)
    with pytest.raises(ValueError, match="view failed"):
        objective(student, x, y, 1)
    monkeypatch.setattr(objective, "_view", real)
    terms = objective(student, x, y, 1)  # would hang if the failed step's view pass still waited
    assert len(terms) >= 4 and all(torch.isfinite(v) for v in terms.values())
    threads.close()


def _objective(method: str, params: dict, overlap: list[str]):
    teacher, pruned, student, x, y, ch = _setup("default")
    threads = ft.FrozenThreads(overlap, 1)
    objective = DistillObjective(method=make_method(method, params), teacher=teacher, pruned=pruned,
                                 view_generator=torch.Generator().manual_seed(2), mean=[0.0], std=[1.0],
                                 frozen_threads=threads)
    return objective, threads, student, x, y


@pytest.mark.parametrize(("method", "params", "net"), [("kd", {}, "teacher"), ("r2kd", {"aug_view": "cutmix"}, "pruned")])
def test_the_next_batch_runs_its_clean_passes_during_this_step(monkeypatch, method, params, net):
    """Lookahead: a step told the next batch queues that batch's clean pass behind its own, on the
    frozen network's thread, and the next step takes it instead of running it again; the last step
    of an epoch (told None) queues nothing. Bit-identity: every test above runs this way."""
    from r2kd.methods import objective as obj

    objective, threads, student, x, y = _objective(method, params, [net])
    seen = []
    real = obj._frozen
    watched = getattr(objective, net)
    monkeypatch.setattr(obj, "_frozen", lambda module, images: (module is watched and seen.append(images))
                        or real(module, images))
    batches = [x + 0.1 * i for i in range(3)]
    for i, images in enumerate(batches):
        objective.upcoming(batches[i + 1] if i + 1 < len(batches) else None)
        objective(student, images, y, 1)
        if i + 1 < len(batches):
            assert net in objective._ahead and objective._ahead[net][0] is batches[i + 1]
    assert objective._ahead == {}
    clean = [images for images in seen if any(images is b for b in batches)]
    assert len(clean) == len(batches)  # one clean pass per batch on that network: none ran twice
    threads.close()


def test_a_step_given_other_images_than_announced_fails_loudly():
    """The frozen networks ran ahead on the announced batch (the pruned teacher's statistics moved):
    a different batch would silently train on statistics the serial step never had."""
    objective, threads, student, x, y = _objective("r2kd", {"aug_view": "cutmix"}, ["pruned"])
    objective.upcoming(x + 1)
    objective(student, x, y, 1)
    with pytest.raises(RuntimeError, match="other images than the ones announced"):
        objective(student, x + 2, y, 1)
    threads.close()


def test_a_failed_step_also_waits_for_the_passes_it_queued_ahead(monkeypatch):
    objective, threads, student, x, y = _objective("r2kd", {"aug_view": "cutmix"}, ["pruned"])
    queued = []
    real_submit = threads.submit
    monkeypatch.setattr(threads, "submit", lambda *a: queued.append(real_submit(*a)) or queued[-1])
    monkeypatch.setattr(objective, "_terms", lambda *a, **k: (_ for _ in ()).throw(ValueError("loss failed")))
    objective.upcoming(x + 1)
    with pytest.raises(ValueError, match="loss failed"):
        objective(student, x, y, 1)
    assert len(queued) == 3  # clean, view, and the next batch's clean pass
    assert all(future.done() for future in queued)  # nothing runs on after the failure
    assert objective._ahead == {}  # and nothing is handed to a later step
    threads.close()


def test_which_networks_get_a_thread(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    both = ["teacher", "pruned"]

    def names(setting, cores, threads=1, processes=1, nets=both, device=cpu):
        monkeypatch.setattr(ft, "usable_cores", lambda: cores)
        got = ft.frozen_threads_for(setting, device, threads, processes, nets)
        return None if got is None else sorted(got._pools)

    assert names("auto", 2) == ["pruned"]  # one spare core: the slowest frozen network moves off
    assert names("auto", 4) == ["pruned", "teacher"]
    assert names("auto", 2, nets=["teacher"]) == ["teacher"]
    assert names("auto", 1) is None  # no core to spare
    assert names("auto", 2, threads=2) is None
    assert names("auto", 4, threads=2) == ["pruned"]
    assert names("always", 1) == ["pruned"]
    assert names("never", 8) is None
    assert names("auto", 8, device=cuda) is None  # CPU only
    assert names("auto", 8, processes=2) is None  # the frozen wrappers' collectives keep one order
    assert names("auto", 8, nets=[]) is None


@pytest.mark.parametrize("workers", [1, 3])
def test_map_in_order_keeps_the_order_and_only_a_few_results_waiting(workers):
    import threading

    started = []
    lock = threading.Lock()

    def work(i):
        with lock:
            started.append(i)
        return i * i

    results = ft.map_in_order(work, range(20), workers, "test")
    assert next(results) == 0
    assert len(started) <= workers + 1  # the first result came before the rest were queued
    assert [0, *results] == [i * i for i in range(20)]


def test_the_setting_is_validated_and_no_result_depends_on_it():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="overlap"):
        Runtime(overlap="sometimes")
    assert "overlap" not in Runtime(overlap="never").result_settings()
