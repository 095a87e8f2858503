"""Class-conditional priors (ops/conditional_priors.py)."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import conditional_priors as op_defs
from .condition import ReadsCondition
from .priors import Normal, normal_log_prob
from .registry import implements


@implements(op_defs.ClassNormal)
class ClassNormal(ReadsCondition, Normal):
    """N(mu(y), diag exp(log s(y))^2) per channel, (mu, log s) = W onehot(y) + b zero-initialised,
    broadcast over positions (Glow's ycond prior)."""

    reads_condition = True

    def __init__(self, shape, condition_in: int):
        super().__init__(shape)
        self.linear = nn.Linear(condition_in, 2 * shape[0])
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(shape, env.condition_in)

    def _loc_scale(self, n: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.linear(self.condition_raw(n).to(like.dtype))
        loc, log_scale = h.chunk(2, dim=1)
        if len(self.shape) == 3:
            loc, log_scale = loc[:, :, None, None], log_scale[:, :, None, None]
        return loc, log_scale

    def log_prob(self, z):
        loc, log_scale = self._loc_scale(z.shape[0], z)
        return normal_log_prob(z, loc, log_scale)

    def sample(self, n, temperature=1.0, like=None):
        like = like if like is not None else self.linear.weight
        eps = super().sample(n, 1.0, like)
        loc, log_scale = self._loc_scale(n, eps)
        return loc + temperature * torch.exp(log_scale) * eps
