"""The learning-rate schedule of a ``train:`` block, as one pure function of the step.

``lr_at(train, step, steps_per_epoch)`` is the rate used by update number ``step`` (0-based):

* linear warm-up: ``lr * min(1, step / warmup)`` (the first update runs at 0, as both the
  DenseFlow code's ``LinearWarmupScheduler`` and the Flow++/VFlow ``lr_schedule`` do);
* exponential decay by ``decay`` per step or per epoch (``decay_every``), starting after
  ``decay_after`` of those units (steps for per-step decay, epochs for per-epoch decay), the decayed
  rate floored at ``lr_min`` (VFlow run_cifar10.py: x0.99999 per step after step 50,000, down to 3e-4);
* after the main ``steps`` (or ``epochs``), ``finetune_epochs`` more epochs at ``finetune_lr``
  (DenseFlow's 20 epochs at 2e-5).

A run is ``total_steps(train, steps_per_epoch)`` updates long.
"""
from __future__ import annotations

from ..language.models import TrainSpec


def main_steps(train: TrainSpec, steps_per_epoch: int) -> int:
    """Updates before fine-tuning: ``steps`` when given, else ``epochs`` whole epochs."""
    return train.steps if train.steps is not None else train.epochs * steps_per_epoch


def total_steps(train: TrainSpec, steps_per_epoch: int) -> int:
    return main_steps(train, steps_per_epoch) + train.finetune_epochs * steps_per_epoch


def lr_at(train: TrainSpec, step: int, steps_per_epoch: int) -> float:
    """The learning rate of update ``step`` (0-based) of a run with ``steps_per_epoch`` updates per epoch."""
    if step < 0 or steps_per_epoch < 1:
        raise ValueError(f"lr_at needs step >= 0 and steps_per_epoch >= 1; got {step}, {steps_per_epoch}")
    if train.finetune_epochs and step >= main_steps(train, steps_per_epoch):
        return train.finetune_lr if train.finetune_lr is not None else train.lr
    warm = min(1.0, step / train.warmup) if train.warmup else 1.0
    lr = train.lr
    if train.decay != 1.0:
        t = step if train.decay_every == "step" else step // steps_per_epoch
        k = t - train.decay_after
        if k > 0:
            lr = max(train.lr * train.decay ** k, train.lr_min)
    return lr * warm


__all__ = ["lr_at", "main_steps", "total_steps"]
