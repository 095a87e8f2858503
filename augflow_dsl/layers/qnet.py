"""q-networks: conditional flows q(v | x) that augment points and dequantizers sample from."""
from __future__ import annotations

import torch
from torch import nn

from .base import UsesNets


class Chain(nn.Module):
    """A flat list of bijections applied in order, each reading the same ``cond``."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x, cond=None):
        ld = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, l = layer(x, cond)
            ld = ld + l
        return x, ld


class QNet(UsesNets, nn.Module):
    """A q-network q(v | x): context net on x, base noise, a conditional flow (noise -> v).
    ``sample(x)`` returns v and log q(v | x) = log base(e) - log|det dv/de| (the flow is
    written, and run, in the sampling direction; it is never inverted)."""

    def __init__(self, context: nn.Module | None, base: nn.Module, flow: Chain):
        super().__init__()
        self.context, self.base, self.flow = context, base, flow

    def sample(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx = self.run_net(self.context, x) if self.context is not None else None
        e, log_base = self.base.rsample(x.shape[0], x)
        v, ld = self.flow(e, ctx)
        return v, log_base - ld
