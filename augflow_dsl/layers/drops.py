"""Drops (factor-out): ``forward(x)`` returns (kept, log-density of the dropped part) and records
the dropped part on the draws' tape; ``inverse(kept)`` replays it or samples it at the draws'
temperature (:class:`~augflow_dsl.layers.base.Draws`)."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import net_descriptions as nl
from ..ops import drops as op_defs
from .base import Step, draw
from .condition import ReadsCondition
from .instantiate import build_children
from .priors import normal_log_prob
from .reshape import squeeze, unsqueeze
from .registry import implements, op_of


@implements(op_defs.FactorOut)
class FactorOut(ReadsCondition, Step):
    """Keep the first C/2 channels; score the rest with N(0, I) or, with ``conditional``, with a
    Gaussian whose (mean, log-std) come from a zero-initialised 3x3 conv of the kept half (the
    op's description: empty, or that ``conv``), read as halves or, ``interleaved``, as channels
    2k, 2k+1 (openai/glow model.py split2d_prior)."""

    def __init__(self, d: nl.Net, interleaved: bool = False, condition_in: int | None = None, channels: int = 0):
        super().__init__()
        self.conv = None
        self.interleaved = interleaved
        build_children(self, d)
        self.cond_linear = None
        if condition_in is not None:  # class-conditional: (mean, log-std) += W onehot(y) + b, zero-initialised
            self.cond_linear = nn.Linear(condition_in, channels)
            nn.init.zeros_(self.cond_linear.weight)
            nn.init.zeros_(self.cond_linear.bias)

    @classmethod
    def from_op(cls, args, shape, env, nets):
        cond = env.condition_in if getattr(args, "condition", False) else None
        return cls(op_of(cls).describe(args, shape), getattr(args, "layout", "halves") == "interleaved", cond,
                   shape[0])

    def _stats(self, kept):
        if self.conv is None and self.cond_linear is None:
            return 0.0, None
        p = self.conv(kept) if self.conv is not None else 0.0
        if self.cond_linear is not None:
            h = self.cond_linear(self.condition_raw(kept.shape[0]).to(kept.dtype))
            p = p + h.view(*h.shape, *[1] * (kept.dim() - 2))
        if self.interleaved:
            return p[:, 0::2], p[:, 1::2]
        c = p.shape[1] // 2
        return p[:, :c], p[:, c:]

    def _split(self, x):
        c = x.shape[1] // 2
        return x[:, :c], x[:, c:]

    def score(self, x):
        """(kept, log-density of the dropped part, dropped part)."""
        kept, dropped = self._split(x)
        loc, log_scale = self._stats(kept)
        return kept, normal_log_prob(dropped, loc, log_scale), dropped

    def restore(self, kept, z=None, temperature: float = 1.0):
        """cat(kept, z), z sampled at ``temperature`` when not given."""
        loc, log_scale = self._stats(kept)
        if z is None:
            eps = temperature * draw(self, "randn", kept.shape, kept)
            z = eps if log_scale is None else loc + torch.exp(log_scale) * eps
        return torch.cat([kept, z], 1)

    def forward(self, x, context=None):
        kept, logp, dropped = self.score(x)
        self.draws.record(dropped)
        return kept, logp

    def inverse(self, kept, context=None):
        return self.restore(kept, self.draws.replay(), self.draws.temperature)


@implements(op_defs.SqueezeAndDrop)
class SqueezeAndDrop(FactorOut):
    """DenseFlow transition (flow_modules.py:47-65): squeeze, keep the first half of the
    channels, score the second half with a fixed N(0, I)."""

    def __init__(self, d: nl.Net, order: str = "channel_major"):
        super().__init__(d)
        self.order = order

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(op_of(cls).describe(args, shape), args.order)

    def score(self, x):
        return super().score(squeeze(x, 2, self.order))

    def restore(self, kept, z=None, temperature: float = 1.0):
        return unsqueeze(super().restore(kept, z, temperature), 2, self.order)
