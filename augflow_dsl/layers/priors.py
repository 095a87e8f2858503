"""Priors: standard normal and a learned per-channel diagonal Gaussian (DenseFlow ConvNormal2d)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..ops import priors as op_defs
from .base import Step, draw, sum_except_batch
from .registry import implements

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def normal_log_prob(z: torch.Tensor, loc=0.0, log_scale=None) -> torch.Tensor:
    if log_scale is None:
        return sum_except_batch(-0.5 * z * z - HALF_LOG_2PI)
    e = (z - loc) * torch.exp(-log_scale)
    return sum_except_batch(-0.5 * e * e - HALF_LOG_2PI - log_scale)


@implements(op_defs.Normal)
class Normal(Step):
    """N(0, I). As the model's last step it drops every dim: ``forward(z)`` scores z (and
    records it on the tape) and hands on an empty [N, 0] tensor; ``inverse`` replays the
    recorded z or samples one at the draws' temperature. As a q-network's base it is used
    through ``rsample``."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(shape)

    def forward(self, z: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        self.draws.record(z)
        return z.new_zeros(z.shape[0], 0), self.log_prob(z)

    def inverse(self, y: torch.Tensor, context=None) -> torch.Tensor:
        z = self.draws.replay()
        return self.sample(y.shape[0], self.draws.temperature, y) if z is None else z

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return normal_log_prob(z)

    def sample(self, n: int, temperature: float = 1.0, like: torch.Tensor | None = None) -> torch.Tensor:
        kw = {"device": like.device, "dtype": like.dtype} if like is not None else {}
        return temperature * draw(self, "randn", lambda: torch.randn(n, *self.shape, **kw))

    def rsample(self, n: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.sample(n, 1.0, like)
        return z, self.log_prob(z)


@implements(op_defs.LearnedNormal)
class LearnedNormal(Normal):
    """Diagonal Gaussian, a mean and a log-std per channel, zero-initialised (normal.py:30-55)."""

    def __init__(self, shape):
        super().__init__(shape)
        pshape = (shape[0], 1, 1) if len(shape) == 3 else (shape[0],)
        self.loc = nn.Parameter(torch.zeros(pshape))
        self.log_scale = nn.Parameter(torch.zeros(pshape))

    def log_prob(self, z):
        return normal_log_prob(z, self.loc, self.log_scale)

    def sample(self, n, temperature=1.0, like=None):
        eps = super().sample(n, 1.0, like if like is not None else self.loc)
        return self.loc + temperature * torch.exp(self.log_scale) * eps

    def rsample(self, n, like):
        z = self.sample(n, 1.0, like)
        return z, self.log_prob(z)
