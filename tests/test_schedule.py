"""lr_at against the closed forms of the authors' schedules (shared/reference-facts.md).

* DenseFlow (denseflow/optim/schedulers/linear_warmup.py:15-16, baseline_flow.py:149,157): the warm-up
  scheduler is stepped every iteration for the whole run and returns base * min(1, it / 5000) from the
  base rate, so the x0.9975 epoch decay never compounds: lr(it) = 1e-3 * min(1, it / 5000), then the
  fine-tune epochs at 2e-5.
* VFlow (run_cifar10.py lr_schedule): max_lr * step / 2000 during warm-up, max_lr up to step 50,000, then
  curr_lr *= 0.99999 per step while curr_lr > 3e-4 (so it stops at the first value <= 3e-4).
"""
from __future__ import annotations

import math

import pytest

import augflow_dsl as af
from augflow_dsl.runtime import lr_at, total_steps
from conftest import SPECS_DIR

SPE = 782  # CIFAR-10 train 50,000 / batch 64, drop_last


def denseflow_closed_form(it: int, main: int) -> float:
    if it >= main:
        return 2e-5
    return 1e-3 * min(1.0, it / 5000)


def vflow_closed_form(step: int) -> float:
    """The authors' stateful schedule replayed in closed form."""
    max_lr, min_lr, decay = 1.2e-3, 3e-4, 0.99999
    if step < 2000:
        return max_lr * step / 2000
    if step <= 50000:
        return max_lr
    k_stop = math.ceil(math.log(min_lr / max_lr) / math.log(decay))  # first k with max_lr * d^k <= min_lr
    return max_lr * decay ** min(step - 50000, k_stop)


@pytest.mark.parametrize("name", ["denseflow-74-10", "denseflow-45-6"])
def test_denseflow_schedule_is_the_codes(name):
    train = af.load(SPECS_DIR / f"{name}.flow").train
    main = train.epochs * SPE
    steps = [0, 1, 2500, 4999, 5000, 5001, 7 * SPE, 100 * SPE, 299 * SPE, main - 1, main, main + 5 * SPE]
    for s in steps:
        assert lr_at(train, s, SPE) == pytest.approx(denseflow_closed_form(s, main), rel=1e-12, abs=0), s
    assert total_steps(train, SPE) == (train.epochs + train.finetune_epochs) * SPE


def test_denseflow_intended_decay_is_one_override_away():
    train = af.load(SPECS_DIR / "denseflow-74-10.flow").train.model_copy(update={"decay": 0.9975})
    assert lr_at(train, 10 * SPE, SPE) == pytest.approx(1e-3 * 0.9975 ** 10)
    assert lr_at(train, 10 * SPE + 781, SPE) == pytest.approx(1e-3 * 0.9975 ** 10)


@pytest.mark.parametrize("name", ["vflow6ch", "vflow6ch-dh64", "budget-vflow6ch"])
def test_vflow_schedule_is_the_codes(name):
    train = af.load(SPECS_DIR / f"{name}.flow").train
    for s in [0, 1, 999, 1999, 2000, 2001, 30000, 50000, 50001, 60000, 100000, 188000, 188629, 200000, 10**6]:
        assert lr_at(train, s, SPE) == pytest.approx(vflow_closed_form(s), rel=1.1e-5, abs=0), s
    # the floor: the code stops one decay step below 3e-4, the spec floors at 3e-4
    assert lr_at(train, 10**6, SPE) == 3e-4


def test_flowpp_schedule_warmup_then_constant():
    train = af.load(SPECS_DIR / "flowpp.flow").train
    assert [lr_at(train, s, SPE) for s in (0, 1000, 2000, 10**5)] == pytest.approx([0, 1.5e-4, 3e-4, 3e-4])


def test_per_epoch_decay_after_and_floor():
    from augflow_dsl.language.models import TrainSpec
    t = TrainSpec(lr=1.0, decay=0.5, decay_every="epoch", decay_after=2, lr_min=0.2, epochs=10)
    got = [lr_at(t, e * 10, 10) for e in range(6)]
    assert got == pytest.approx([1, 1, 1, 0.5, 0.25, 0.2])
    with pytest.raises(ValueError):
        lr_at(t, -1, 10)
