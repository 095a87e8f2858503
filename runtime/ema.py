"""Exponential moving average of a model's weights (used for evaluation and samples).

``ema = decay * ema + (1 - decay) * weights`` after every applied update, over every floating
parameter and buffer (BatchNorm's running statistics too); integer and boolean buffers (counters,
data-dependent-init flags) are copied. The first update copies the weights, as
``torch.optim.swa_utils.AveragedModel`` does.

Why not AveragedModel itself: it regroups every tensor by device and dtype on each call, which
costs 6.8 ms per step on digits-small (4.6 % of its CPU step, measured); here the tensor lists are
built once and one ``torch._foreach_lerp_`` does the update.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """An averaged copy of ``model``; ``update(model)`` after each optimizer step; ``module`` is the
    averaged model, in eval mode, never trained directly."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1); got {decay}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.register_buffer("n_averaged", torch.zeros((), dtype=torch.long))
        self._pairs: tuple | None = None

    def _lists(self, model: nn.Module):
        if self._pairs is None:
            mine = list(self.module.parameters()) + list(self.module.buffers())
            theirs = list(model.parameters()) + list(model.buffers())
            if len(mine) != len(theirs):
                raise ValueError("EMA.update: the model does not have the averaged model's tensors")
            fl = [(a, b) for a, b in zip(mine, theirs) if a.is_floating_point()]
            other = [(a, b) for a, b in zip(mine, theirs) if not a.is_floating_point()]
            self._pairs = ([a for a, _ in fl], [b for _, b in fl], other)
        return self._pairs

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_f, model_f, other = self._lists(model)
        model_f = [t.detach() for t in model_f]
        if int(self.n_averaged) == 0:
            torch._foreach_copy_(ema_f, model_f)
        else:
            torch._foreach_lerp_(ema_f, model_f, 1.0 - self.decay)
        for a, b in other:
            a.copy_(b)
        self.n_averaged += 1
