"""Augment points: ``forward`` appends dims and returns their ELBO term; ``inverse`` drops them."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import augment as op_defs
from .base import Step, UsesNets, draw
from .priors import normal_log_prob
from .registry import implements


@implements(op_defs.CrossUnit)
class CrossUnit(UsesNets, Step):
    """DenseFlow cross-unit coupling (eq. 6-9): e' = mu + sigma * e, e ~ N(0, I),
    (mu, u) = g(context), log sigma = 2 tanh(u/2); y = cat(x, e'); the term
    log|diag sigma| - log N(e) (eq. 9) joins the log-likelihood. ``context`` is
    cat(block input, earlier unit outputs) on channels, as the graph's ``reads`` say. The
    inverse drops e' and never evaluates g."""

    def __init__(self, g: nn.Module, growth: int):
        super().__init__()
        self.g, self.growth = g, growth

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(nets["g"], args.growth)

    def forward(self, x, context):
        p = self.run_net(self.g, context)
        mu, u = p[:, :self.growth], p[:, self.growth:]
        log_sigma = 2 * torch.tanh(u / 2)
        eps = draw(self, "randn", mu.shape, mu)
        e = mu + torch.exp(log_sigma) * eps
        term = (log_sigma.flatten(1).sum(1) - normal_log_prob(eps))
        return torch.cat([x, e], 1), term

    def inverse(self, y, context=None):
        return y[:, :-self.growth]


@implements(op_defs.InputAugment)
class InputAugment(Step):
    """VFlow input augmentation (eq. 4-7): y = cat(x, z), z ~ q(z | x) from the step's own
    q-network (built from the graph's q chain, slot ``q``); the ELBO gains -log q(z | x).
    The inverse keeps the first C channels."""

    def __init__(self, q: nn.Module, channels: int):
        super().__init__()
        self.q, self.channels = q, channels

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(nets["q"], args.channels)

    def forward(self, x, context=None):
        z, log_q = self.q.sample(x)
        return torch.cat([x, z], 1), -log_q

    def inverse(self, y, context=None):
        return y[:, :-self.channels]
