"""Elementwise bijections."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..ops import elementwise as op_defs
from .base import Bijection, sum_except_batch, zeros_like_batch
from .registry import implements


def _log_dsigmoid(x: torch.Tensor) -> torch.Tensor:
    """log sigmoid'(x) = -softplus(-x) - softplus(x), summed per example."""
    return sum_except_batch(-F.softplus(-x) - F.softplus(x))


@implements(op_defs.Sigmoid)
class Sigmoid(Bijection):
    """y = sigmoid(x); log|dy/dx| = -softplus(-x) - softplus(x)."""

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls()

    def forward(self, x, cond=None):
        return torch.sigmoid(x), _log_dsigmoid(x)

    def inverse_and_logdet(self, y, cond=None):
        x = torch.log(y) - torch.log1p(-y)
        return x, -_log_dsigmoid(x)


@implements(op_defs.Logit)
class Logit(Bijection):
    """y = logit(alpha + (1 - 2 alpha) x) (RealNVP Sec. 4.1; Flow++ ImgProc with alpha 0.05)."""

    def __init__(self, alpha: float = 0.05):
        super().__init__()
        self.alpha = alpha

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(args.alpha)

    def forward(self, x, cond=None):
        p = self.alpha + (1 - 2 * self.alpha) * x
        y = torch.log(p) - torch.log1p(-p)
        ld = sum_except_batch(-torch.log(p) - torch.log1p(-p)) + x[0].numel() * math.log(1 - 2 * self.alpha)
        return y, ld

    def inverse_and_logdet(self, y, cond=None):
        p = torch.sigmoid(y)
        x = (p - self.alpha) / (1 - 2 * self.alpha)
        ld = _log_dsigmoid(y) - y[0].numel() * math.log(1 - 2 * self.alpha)
        return x, ld


@implements(op_defs.Shift)
class Shift(Bijection):
    """y = x + by; log-det 0."""

    def __init__(self, by: float = -0.5):
        super().__init__()
        self.by = by

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(args.by)

    def forward(self, x, cond=None):
        return x + self.by, zeros_like_batch(x)

    def inverse_and_logdet(self, y, cond=None):
        return y - self.by, zeros_like_batch(y)
