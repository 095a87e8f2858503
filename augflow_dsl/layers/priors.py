"""Priors: standard normal, a learned per-channel diagonal Gaussian (DenseFlow ConvNormal2d) and
openai/glow's learned top prior (--learntop)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..ops import net_descriptions as nl
from ..ops import priors as op_defs
from .base import Step, draw, sum_except_batch
from .instantiate import build_children
from .registry import implements, op_of

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
        return temperature * draw(self, "randn", (n, *self.shape), like)

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

    @classmethod
    def from_op(cls, args, shape, env, nets):
        if args.param == "glow_learntop":
            return GlowLearnTop(shape, op_of(cls).describe(args, shape))
        return cls(shape)

    def log_prob(self, z):
        return normal_log_prob(z, self.loc, self.log_scale)

    def sample(self, n, temperature=1.0, like=None):
        eps = super().sample(n, 1.0, like if like is not None else self.loc)
        return self.loc + temperature * torch.exp(self.log_scale) * eps

    def rsample(self, n, like):
        z = self.sample(n, 1.0, like)
        return z, self.log_prob(z)


class GlowLearnTop(LearnedNormal):
    """openai/glow's learned top prior (``--learntop``, model.py prior): h = Conv2dZeros(zeros of
    2C channels), a 3x3 conv with the edge channel (tfops.py conv2d_zeros), mean h[:C], log-std
    h[C:]. The reference convolves a zero tensor per example; the result is the same for every
    example, so it is computed once per call on one. Built by ``learned_normal(param: glow_learntop)``."""

    def __init__(self, shape, d: nl.Net):
        Normal.__init__(self, shape)  # no per-channel parameters: the conv holds them
        build_children(self, d)

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.conv.conv.weight
        h = self.conv(w.new_zeros(1, 2 * self.shape[0], *self.shape[1:]))[0]
        return h[:self.shape[0]], h[self.shape[0]:]

    @property
    def loc(self) -> torch.Tensor:
        return self._stats()[0]

    @property
    def log_scale(self) -> torch.Tensor:
        return self._stats()[1]

    def log_prob(self, z):
        return normal_log_prob(z, *self._stats())

    def sample(self, n, temperature=1.0, like=None):
        loc, log_scale = self._stats()
        eps = Normal.sample(self, n, 1.0, like if like is not None else loc)
        return loc + temperature * torch.exp(log_scale) * eps
