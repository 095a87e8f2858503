"""Augment points: forward appends dims and returns the ELBO term; inverse drops them."""
from __future__ import annotations

import torch
from torch import nn

from .base import UsesNets
from .priors import normal_log_prob


class CrossUnit(UsesNets, nn.Module):
    """DenseFlow cross-unit coupling (eq. 6-9): e' = mu + sigma * e, e ~ N(0, I),
    (mu, u) = g(cat(z_<i)), log sigma = 2 tanh(u/2); y = cat(x, e'); the term
    log|diag sigma| - log N(e) (eq. 9) joins the log-likelihood. The inverse drops e'."""

    def __init__(self, g: nn.Module, growth: int):
        super().__init__()
        self.g, self.growth = g, growth

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(nets["g"], args.growth)

    def forward(self, x, reads: list[torch.Tensor], temperature: float = 1.0):
        p = self.run_net(self.g, torch.cat(reads, 1) if len(reads) > 1 else reads[0])
        mu, u = p[:, :self.growth], p[:, self.growth:]
        log_sigma = 2 * torch.tanh(u / 2)
        eps = temperature * torch.randn_like(mu)
        e = mu + torch.exp(log_sigma) * eps
        term = (log_sigma.flatten(1).sum(1) - normal_log_prob(eps))
        return torch.cat([x, e], 1), term

    def inverse(self, y):
        return y[:, :-self.growth]


class InputAugment(nn.Module):
    """VFlow input augmentation (eq. 4-7): y = cat(x, z), z ~ q(z | x); the q-network's sample
    and log q arrive from the compiled q-plan; the ELBO gains -log q(z | x)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(args.channels)

    def forward(self, x, z, log_q):
        return torch.cat([x, z], 1), -log_q

    def inverse(self, y):
        return y[:, :-self.channels]
