"""Dequantizers: the first step of a model on integer data (Flow++ Sec. 3.1).

``forward(x)`` maps integers x in 0 .. 2^bits - 1 to v = (x + u) / 2^bits in [0, 1) and
returns log w = -D bits ln 2 - log r(u | x) (Flow++ eq. 12; uniform: r = 1); ``inverse(v)``
maps back to the integer bin, floor(2^bits v) clipped to the range. With the draws' ``centre``
set (``encode``), u = 1/2 and log r = 0: integers sit at the centre of their bin, so the
round trip is exact whenever the flow's error stays below half a level.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..ops import dequantize as op_defs
from .base import Step, draw
from .registry import implements


@implements(op_defs.Uniform)
class Uniform(Step):
    """u ~ U[0, 1)^D (Theis et al. 2016)."""

    def __init__(self, shape: tuple[int, ...], bits: int):
        super().__init__()
        self.levels = 2.0 ** bits
        self.volume = -math.prod(shape) * bits * math.log(2)

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(shape, env.bits)

    def noise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, log r(u | x))."""
        return draw(self, "rand", x.shape, x), x.new_zeros(x.shape[0])

    def forward(self, x, context=None):
        if self.draws.centre:
            u, log_r = torch.full_like(x, 0.5), x.new_zeros(x.shape[0])
        else:
            u, log_r = self.noise(x)
        return (x + u) / self.levels, self.volume - log_r

    def inverse(self, v, context=None):
        # 0.0, not 0: torch 2.14's ONNX exporter cannot decompose clamp(int, float) (same result)
        return torch.floor(v * self.levels).clamp(0.0, self.levels - 1)


@implements(op_defs.Variational)
class Variational(Uniform):
    """u ~ r(u | x), a conditional flow ending in (0, 1) (Flow++ Sec. 3.1.2), built from the
    graph's q chain (slot ``q``)."""

    def __init__(self, shape: tuple[int, ...], bits: int, q: nn.Module):
        super().__init__(shape, bits)
        self.q = q

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(shape, env.bits, nets["q"])

    def noise(self, x):
        return self.q.sample(x)
