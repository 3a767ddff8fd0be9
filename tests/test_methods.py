"""Method wrappers: registry, params, which terms each view gets, their weights, and the log columns."""

from __future__ import annotations

import math
import re
from typing import get_args

import pytest
import torch
from pydantic import ValidationError

from r2kd.augment import VIEWS
from r2kd.config import METHOD_PARAMS, MethodName, ViewName
from r2kd.errors import ConfigError
from r2kd.methods import AUG_SUFFIX, METHODS, make_method
from r2kd.methods._common import cross_entropy
from r2kd.methods.dist import dist_loss
from r2kd.methods.dkd import dkd_loss
from r2kd.methods.kd import kd_loss
from r2kd.methods.r2kd import mix_teacher_logits, rank_loss, value_loss

torch.set_num_threads(1)
D = torch.float64


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    student = (2 * torch.randn(6, 5, generator=g, dtype=D)).requires_grad_()
    teacher = 3 * torch.randn(6, 5, generator=g, dtype=D)
    pruned = teacher + torch.randn(6, 5, generator=g, dtype=D)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    return student, teacher, pruned, labels


def _call(d, batch, clean=True, epoch=100):
    student, teacher, pruned, labels = batch
    return d.losses(student=student, teacher=teacher, pruned=pruned, labels=labels, clean=clean, epoch=epoch)


SHIPPED = ("ce", "kd", "dist", "dkd", "r2kd")  # the methods this project ships; a new one is added beside them


def test_registry_names_and_lookup():
    assert set(SHIPPED) <= set(METHODS)
    for name, cls in METHODS.items():
        assert type(make_method(name)) is cls and cls.name == name
    with pytest.raises(ConfigError, match=re.escape(f"unknown method 'fitnet'; known methods: {', '.join(sorted(METHODS))}")):
        make_method("fitnet")


def test_registry_matches_the_schema():
    # params.yaml names a method by a literal of the (torch-free) schema; its Params live there too.
    assert set(METHODS) == set(get_args(MethodName)) == set(METHOD_PARAMS)
    for name, cls in METHODS.items():
        assert cls.Params is METHOD_PARAMS[name]


def test_teacher_flags():
    assert not METHODS["ce"].uses_teacher
    assert all(METHODS[n].uses_teacher for n in ("kd", "dist", "dkd", "r2kd"))
    assert [n for n in SHIPPED if METHODS[n].uses_pruned_teacher] == ["r2kd"]


def test_aug_view_literal_matches_view_registry():
    assert set(get_args(ViewName)) == set(VIEWS)
    for cls in METHODS.values():
        assert set(get_args(cls.Params.model_fields["aug_view"].annotation)) == set(VIEWS)


def test_published_defaults():
    assert make_method("r2kd").params.model_dump() == {
        "aug_view": "cutmix",
        "autoaugment_per": "batch",
        "temperature": 4.0,
        "alpha": 2.0,
        "beta": 2.0,
        "teacher_weight": 0.7,
        "rank": "hard",
        "rank_sharpness": 10.0,
        "ce_weight": 1.0,
    }
    assert make_method("kd").params.model_dump() == {
        "aug_view": "none", "autoaugment_per": "batch", "temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9
    }
    assert make_method("dist").params.model_dump() == {
        "aug_view": "none", "autoaugment_per": "batch", "temperature": 4.0, "beta": 2.0, "gamma": 2.0, "ce_weight": 1.0
    }
    assert make_method("dkd").params.model_dump() == {
        "aug_view": "none", "autoaugment_per": "batch", "temperature": 4.0, "alpha": 1.0, "beta": 8.0, "warmup": 20, "ce_weight": 1.0
    }
    assert make_method("ce").params.aug_view == "none"


@pytest.mark.parametrize(
    ("name", "params", "key"),
    [
        ("kd", {"temprature": 3.0}, "temprature"),
        ("kd", {"temperature": 0.0}, "temperature"),
        ("r2kd", {"teacher_weight": 1.5}, "teacher_weight"),
        ("r2kd", {"rank": "medium"}, "rank"),
        ("r2kd", {"aug_view": "randaugment"}, "aug_view"),
        ("dkd", {"warmup": -1}, "warmup"),
        ("ce", {"aug_view": "cutout!"}, "aug_view"),
    ],
)
def test_bad_params_name_the_key(name, params, key):
    with pytest.raises(ValidationError, match=key):
        METHODS[name].Params(**params)
    with pytest.raises(ConfigError, match=key):
        make_method(name, params)


def test_baseline_can_use_an_augmented_view():
    assert all(METHODS[n].uses_aug_view for n in SHIPPED if n != "ce")
    assert make_method("kd", {"aug_view": "mixup"}).aug_view == "mixup"
    assert make_method("dkd", {"aug_view": "cutmixpick"}).aug_view == "cutmixpick"


def test_ce_has_no_teacher_term_and_skips_the_view(batch):
    d = make_method("ce")
    assert not d.uses_aug_view
    assert make_method("ce", {"aug_view": "cutmix"}).aug_view == "none"  # nothing to train on it
    student, _, _, labels = batch
    out = d.losses(student=student, teacher=None, pruned=None, labels=labels, clean=True, epoch=1)
    assert set(out) == {"ce"}
    assert out["ce"].item() == pytest.approx(cross_entropy(student, labels).item(), rel=1e-12)
    assert d.losses(student=student, teacher=None, pruned=None, labels=labels, clean=False, epoch=1) == {}


def test_kd_terms_and_weights(batch):
    student, teacher, _, labels = batch
    d = make_method("kd")
    out = _call(d, batch)
    assert set(out) == {"ce", "kd"}
    assert out["ce"].item() == pytest.approx(0.1 * cross_entropy(student, labels).item(), rel=1e-12)
    assert out["kd"].item() == pytest.approx(0.9 * kd_loss(student, teacher, 4.0).item(), rel=1e-12)
    aug = _call(d, batch, clean=False)
    assert set(aug) == {"kd" + AUG_SUFFIX}  # no CE on the augmented view


def test_dist_terms_and_weights(batch):
    student, teacher, _, labels = batch
    out = _call(make_method("dist"), batch)
    assert set(out) == {"ce", "dist"}
    assert out["dist"].item() == pytest.approx(dist_loss(student, teacher, 4.0, 2.0, 2.0).item(), rel=1e-12)
    assert set(_call(make_method("dist"), batch, clean=False)) == {"dist_aug"}


def test_dkd_warmup_and_clean_labels_on_the_view(batch):
    student, teacher, _, labels = batch
    d = make_method("dkd")
    full = dkd_loss(student, teacher, labels, alpha=1.0, beta=8.0, temperature=4.0).item()
    assert _call(d, batch, epoch=1)["dkd"].item() == pytest.approx(full / 20, rel=1e-12)
    assert _call(d, batch, epoch=20)["dkd"].item() == pytest.approx(full, rel=1e-12)
    assert _call(d, batch, epoch=200)["dkd"].item() == pytest.approx(full, rel=1e-12)
    aug = _call(d, batch, clean=False, epoch=200)
    assert set(aug) == {"dkd_aug"}
    assert aug["dkd_aug"].item() == pytest.approx(full, rel=1e-12)  # the labels passed in are used


def test_r2kd_terms_weights_and_target(batch):
    student, teacher, pruned, labels = batch
    d = make_method("r2kd")
    target = 0.7 * teacher + 0.3 * pruned
    out = _call(d, batch)
    assert set(out) == {"ce", "value", "rank"}
    assert out["ce"].item() == pytest.approx(cross_entropy(student, labels).item(), rel=1e-12)
    assert out["value"].item() == pytest.approx(value_loss(student, target, 4.0, 2.0).item(), rel=1e-12)
    assert out["rank"].item() == pytest.approx(rank_loss(student, target, 4.0, 2.0).item(), rel=1e-12)
    assert torch.allclose(d.target(teacher, pruned), mix_teacher_logits(teacher, pruned, 0.7))
    aug = _call(d, batch, clean=False)
    assert set(aug) == {"value_aug", "rank_aug"}
    assert aug["value_aug"].item() == pytest.approx(out["value"].item(), rel=1e-12)


def test_r2kd_hard_rank_is_logged_but_does_not_train(batch):
    student, teacher, pruned, labels = batch
    out = _call(make_method("r2kd"), batch)
    assert not out["rank"].requires_grad and out["rank"].item() > 0
    (g_all,) = torch.autograd.grad(sum(out.values()), student, retain_graph=True)
    (g_no_rank,) = torch.autograd.grad(out["ce"] + out["value"], student)
    assert torch.allclose(g_all, g_no_rank)


def test_r2kd_soft_rank_trains(batch):
    student = batch[0]
    out = _call(make_method("r2kd", {"rank": "soft", "rank_sharpness": 5.0}), batch)
    (g,) = torch.autograd.grad(out["rank"], student)
    assert g.abs().sum().item() > 0


def test_r2kd_weights_scale_the_terms(batch):
    base = _call(make_method("r2kd"), batch)
    scaled = _call(make_method("r2kd", {"alpha": 6.0, "beta": 1.0, "ce_weight": 0.5}), batch)
    assert scaled["value"].item() == pytest.approx(3 * base["value"].item(), rel=1e-12)
    assert scaled["rank"].item() == pytest.approx(0.5 * base["rank"].item(), rel=1e-12)
    assert scaled["ce"].item() == pytest.approx(0.5 * base["ce"].item(), rel=1e-12)


def test_r2kd_temperature_enters_value_as_t_squared_only_through_the_formula(batch):
    # Independent check of the wrapper's value term: α·T²·(d_inter + d_intra) written out here.
    student, teacher, pruned, _ = batch
    t, target = 4.0, 0.7 * teacher + 0.3 * pruned
    ps, pt = torch.softmax(student.detach() / t, 1), torch.softmax(target / t, 1)

    def d(a, b):
        return 1 - ((a * b).sum(1).abs() / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)).mean()

    expected = 2.0 * t * t * (d(ps, pt) + d(ps.T, pt.T))
    assert _call(make_method("r2kd"), batch)["value"].item() == pytest.approx(expected.item(), rel=1e-10)


def test_teachers_are_detached(batch):
    student, teacher, pruned, labels = batch
    teacher = teacher.clone().requires_grad_()
    pruned = pruned.clone().requires_grad_()
    out = make_method("r2kd").losses(
        student=student, teacher=teacher, pruned=pruned, labels=labels, clean=True, epoch=1
    )
    sum(out.values()).backward()
    assert teacher.grad is None and pruned.grad is None and student.grad is not None


def test_missing_teacher_is_an_error(batch):
    student, _, pruned, labels = batch
    for name in ("kd", "dist", "dkd", "r2kd"):
        with pytest.raises(ValueError, match="teacher"):
            make_method(name).losses(
                student=student, teacher=None, pruned=pruned, labels=labels, clean=True, epoch=1
            )
    with pytest.raises(ValueError, match="pruned"):
        make_method("r2kd").losses(student=student, teacher=batch[1], pruned=None, labels=labels, clean=True, epoch=1)


def test_r2kd_without_pruned_teacher_when_weight_is_one(batch):
    student, teacher, _, labels = batch
    d = make_method("r2kd", {"teacher_weight": 1.0})
    out = d.losses(student=student, teacher=teacher, pruned=None, labels=labels, clean=True, epoch=1)
    assert out["value"].item() == pytest.approx(value_loss(student, teacher, 4.0, 2.0).item(), rel=1e-12)


def test_params_type_is_checked():
    with pytest.raises(TypeError):
        METHODS["kd"](METHODS["dist"].Params())


def test_losses_are_finite_for_extreme_logits():
    student = torch.tensor([[80.0, -80.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[-90.0, 90.0, 0.0], [1e-3, 0.0, 0.0]])
    labels = torch.tensor([0, 2])
    for name in METHODS:
        d = make_method(name)
        out = d.losses(student=student, teacher=teacher, pruned=teacher, labels=labels, clean=True, epoch=5)
        total = sum(out.values())
        assert math.isfinite(total.item()), name
        (g,) = torch.autograd.grad(total, student)
        assert torch.isfinite(g).all(), name


# --- the names a training step logs ------------------------------------------------------------
# One entry per registered method (a new method adds its own): the log.csv columns, in order, of a
# step under an augment (`train_<name>`).
LOGGED = {
    "ce": ["ce"],  # no term on the augmented view: the view is not even built
    "kd": ["ce", "kd", "kd_aug"],
    "dist": ["ce", "dist", "dist_aug"],
    "dkd": ["ce", "dkd", "dkd_aug"],
    "r2kd": ["ce", "value", "rank", "value_aug", "rank_aug"],
}


def _tiny_setup():
    from r2kd import models
    from r2kd.pruning import set_bn_mode

    torch.manual_seed(0)
    net = lambda name: models.create(name, 4, in_channels=1, input_size=8)  # noqa: E731
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(2)]
    return net("resnet8"), net("resnet8").eval(), set_bn_mode(net("resnet8"), "train"), batches


@pytest.mark.parametrize("name", sorted(METHODS))
def test_objective_names_each_term_once(name):
    from r2kd.methods.objective import DistillObjective

    assert name in LOGGED, f"add {name!r}'s log columns to LOGGED in tests/test_methods.py (docs/extending.md)"

    student, teacher, pruned, batches = _tiny_setup()
    objective = DistillObjective(method=make_method(name, {"aug_view": "cutmix"}), teacher=teacher, pruned=pruned,
                                 view_generator=torch.Generator().manual_seed(2), mean=[0.0], std=[1.0])
    x, y = batches[0]
    assert list(objective(student, x, y, 1)) == LOGGED[name]


def test_training_log_columns_of_r2kd(tmp_path):
    from r2kd.config import TrainRecipe
    from r2kd.methods.objective import DistillObjective
    from r2kd.train import Trainer

    student, teacher, pruned, batches = _tiny_setup()
    objective = DistillObjective(method=make_method("r2kd"), teacher=teacher, pruned=pruned,
                                 view_generator=torch.Generator().manual_seed(2), mean=[0.0], std=[1.0])
    trainer = Trainer(model=student, recipe=TrainRecipe(epochs=1, batch_size=8, lr=0.01, momentum=0.9, weight_decay=0.0),
                      train_batches=batches, test_batches=batches, objective=objective, generators={},
                      state_path=tmp_path / "state.pt", fingerprint="f", label="t")
    row = trainer.fit().history[0]
    assert list(row) == ["epoch", "lr", "train_ce", "train_value", "train_rank", "train_value_aug", "train_rank_aug",
                         "test_top1", "test_top5", "test_loss", "seconds"]
