"""The CUDA-graph step (r2kd.fast.graphs, r2kd.augment.draw/apply): the same numbers as the eager step.

A CUDA graph can only be captured on a GPU, but everything around the capture (static inputs, the
view drawn outside and applied with fixed shapes, recapture every epoch, the eager last batch, the
warm-up steps, the fall-back when capture fails) is checked here on the CPU with a stand-in backend
whose "replay" calls the recorded step again: bit for bit against the eager Trainer. The real
capture is checked on CUDA by the GPU tests at the end (benchmarks/gpu_check.sh runs them).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from r2kd import models
from r2kd.augment import apply, draw, fixed_shape_views, make_view
from r2kd.config import TrainRecipe
from r2kd.data.loader import BatchIterator
from r2kd.fast.graphs import WARMUP_STEPS, EagerReplayBackend
from r2kd.methods import make_method
from r2kd.methods.objective import DistillObjective
from r2kd.pruning import set_bn_mode
from r2kd.train import Trainer, cross_entropy_objective


@pytest.mark.parametrize("name", sorted(fixed_shape_views()))
@pytest.mark.parametrize("shape", [(64, 3, 32, 32), (7, 1, 8, 8), (5, 3, 9, 13)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_static_view_equals_the_eager_view_bit_for_bit(name, shape, channels_last):
    for seed in range(12):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1000 + seed))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        eager_g, static_g = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        eager = make_view(name, x, generator=eager_g, mean=[0.0] * shape[1], std=[1.0] * shape[1])
        static = apply(name, x, draw(name, shape, static_g))
        assert torch.equal(eager.x, static.x), (name, seed)
        if eager.perm is not None:
            assert torch.equal(eager.perm, static.perm)
        # the same draws, in the same order: the generator ends in the same state
        assert torch.equal(eager_g.get_state(), static_g.get_state())


def test_cutmix_static_view_really_pastes_a_box():
    """Guards the comparison above against two views that are equal because both do nothing."""
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        drawn = draw("cutmix", x.shape, g)
        y1, y2, x1, x2 = drawn["box"].tolist()
        view = apply("cutmix", x, drawn).x
        inside = torch.zeros(8, 8, dtype=torch.bool)
        inside[y1:y2, x1:x2] = True
        assert torch.equal(view[:, :, inside], x[drawn["perm"]][:, :, inside])
        assert torch.equal(view[:, :, ~inside], x[:, :, ~inside])


def test_views_without_a_fixed_shape_form_are_refused():
    for name in ("autoaugment", "cutmixpick"):
        assert name not in fixed_shape_views()
        with pytest.raises(ValueError, match="fixed-shape"):
            draw(name, (4, 3, 32, 32), torch.Generator())


# --- the graphed Trainer against the eager Trainer, on the CPU -----------------------------------
def _net(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.create(name, 10, in_channels=1, input_size=8)


def _fit(tmp_path: Path, method: str | None, *, graphs: bool, backend=None, aug_view: str | None = None,
         epochs: int = 3, device: torch.device = torch.device("cpu")):
    """Train resnet8 on 278 random 8x8 images (4 full batches of 64 + one of 22 per epoch)."""
    g = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (278, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (278,), generator=g)
    data_g = torch.Generator().manual_seed(11)
    view_g = torch.Generator().manual_seed(12)
    common = dict(batch_size=64, mean=[0.5], std=[0.25], device=device)
    train = BatchIterator(images, labels, train=True, generator=data_g, crop_padding=1, hflip=True, **common)
    test = BatchIterator(images[:40], labels[:40], train=False, generator=None, **common)
    student = _net("resnet8", 1).to(device)
    pruned = None
    if method is None:
        objective = cross_entropy_objective
    else:
        params = {"aug_view": aug_view} if aug_view else {}
        chosen = make_method(method, params)
        teacher = set_bn_mode(_net("resnet8", 2).to(device), "eval")
        pruned = set_bn_mode(_net("resnet8", 3).to(device), "train") if chosen.uses_pruned_teacher else None
        objective = DistillObjective(method=chosen, teacher=teacher, pruned=pruned, view_generator=view_g,
                                     mean=[0.5], std=[0.25])
    recipe = TrainRecipe(epochs=epochs, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4, milestones=[2])
    trainer = Trainer(model=student, recipe=recipe, train_batches=train, test_batches=test, objective=objective,
                      generators={"data": data_g, "view": view_g}, state_path=tmp_path / f"state-{graphs}.pt",
                      fingerprint="f", label="t", graphs=graphs, graph_backend=backend)
    result = trainer.fit()
    state = {k: v.clone() for k, v in student.state_dict().items()}
    if pruned is not None:  # the pruned teacher's train-mode BatchNorm statistics moved too
        state.update({f"pruned.{k}": v.clone() for k, v in pruned.state_dict().items()})
    return result, state, trainer


@pytest.mark.parametrize(("method", "aug_view"), [("r2kd", "cutmix"), ("r2kd", "mixup"), ("kd", None),
                                                   ("dkd", "cutout"), (None, None)])
def test_graphed_trainer_equals_the_eager_trainer_bit_for_bit(tmp_path, method, aug_view):
    eager, eager_state, _ = _fit(tmp_path, method, graphs=False, aug_view=aug_view)
    backend = EagerReplayBackend()
    graphed, graphed_state, trainer = _fit(tmp_path, method, graphs=True, backend=backend, aug_view=aug_view)
    assert trainer.step_kind == "cuda-graph"
    # one capture per epoch (the learning rate is a constant in a graph), after the warm-up steps
    assert backend.captures == 3
    assert backend.replays == 3 * 4 - WARMUP_STEPS
    drop = {"seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in graphed.history] == \
        [{k: v for k, v in r.items() if k not in drop} for r in eager.history]
    assert eager_state.keys() == graphed_state.keys()
    for key in eager_state:
        assert torch.equal(eager_state[key], graphed_state[key]), key
    assert eager.history[-1]["train_ce"] < eager.history[0]["train_ce"] or method is not None


def test_a_view_without_a_fixed_shape_form_keeps_the_run_eager(tmp_path):
    backend = EagerReplayBackend()
    _, _, trainer = _fit(tmp_path, "r2kd", graphs=True, backend=backend, aug_view="autoaugment", epochs=1)
    assert trainer.step_kind == "eager" and backend.captures == 0


class _FailingBackend(EagerReplayBackend):
    def capture(self, fn):
        raise RuntimeError("operation not permitted when stream is capturing")


def test_a_failed_capture_continues_eagerly_with_the_same_numbers(tmp_path):
    eager, eager_state, _ = _fit(tmp_path, "r2kd", graphs=False, aug_view="cutmix", epochs=2)
    with pytest.warns(UserWarning, match="capture failed"):
        graphed, graphed_state, trainer = _fit(tmp_path, "r2kd", graphs=True, backend=_FailingBackend(),
                                               aug_view="cutmix", epochs=2)
    assert trainer.step_kind == "eager"
    assert [r["train_value"] for r in graphed.history] == [r["train_value"] for r in eager.history]
    for key in eager_state:
        assert torch.equal(eager_state[key], graphed_state[key]), key


def test_graphs_are_part_of_the_fast_path_on_cuda_only():
    from r2kd.runtime import graphs_enabled

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert graphs_enabled(True, cuda, "none") and graphs_enabled(True, cuda, "bf16")
    assert not graphs_enabled(True, cuda, "fp16")  # the loss scaler reads overflow on the host
    assert not graphs_enabled(False, cuda, "none") and not graphs_enabled(True, cpu, "none")


# --- the real capture, on CUDA ----------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("method", "aug_view"), [("r2kd", "cutmix"), ("dkd", None), (None, None)])
def test_cuda_graph_trainer_follows_the_eager_trainer_on_cuda(tmp_path, method, aug_view, cuda_deterministic):
    """Real CUDA graphs, 3 epochs x 5 steps (4 full batches: warm-up, capture, replays, the eager last
    batch); the same check over 75 steps below."""
    _cuda_fit_compare(tmp_path, method, aug_view, epochs=3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_trainer_follows_the_eager_loss_trajectory_over_75_steps(tmp_path, cuda_deterministic):
    _cuda_fit_compare(tmp_path, "r2kd", "cutmix", epochs=15)


def _cuda_fit_compare(tmp_path, method, aug_view, epochs):
    device = torch.device("cuda")
    eager, eager_state, _ = _fit(tmp_path, method, graphs=False, aug_view=aug_view, epochs=epochs, device=device)
    graphed, graphed_state, trainer = _fit(tmp_path, method, graphs=True, aug_view=aug_view, epochs=epochs,
                                           device=device)
    assert trainer.step_kind == "cuda-graph"
    worst = max(((eager_state[k] - graphed_state[k]).abs().max().item(), k) for k in eager_state
                if eager_state[k].is_floating_point())
    print(f"{method}/{aug_view}, {epochs} epochs: largest weight difference graph vs eager {worst[0]:.3g} ({worst[1]})")
    # Measured on an H100 (benchmarks/results/): with deterministic kernels the replayed graph runs
    # the eager step's kernels on the same data, so the weights and logs are equal bit for bit.
    assert worst[0] == 0.0
    drop = {"seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in graphed.history] == \
        [{k: v for k, v in r.items() if k not in drop} for r in eager.history]
