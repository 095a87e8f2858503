"""Squeeze, Unsqueeze, Swap: rearrangements with log-det 0."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops import reshape as op_defs
from .base import Bijection, zeros_like_batch
from .registry import implements


def squeeze(x: torch.Tensor, factor: int, order: str) -> torch.Tensor:
    y = F.pixel_unshuffle(x, factor)  # channel c*f*f + i*f + j
    if order == "space_major":  # TF space_to_depth: (i*f + j)*C + c
        n, _, h, w = y.shape
        y = y.view(n, x.shape[1], factor * factor, h, w).transpose(1, 2).reshape(n, -1, h, w)
    return y


def unsqueeze(y: torch.Tensor, factor: int, order: str) -> torch.Tensor:
    if order == "space_major":
        n, c4, h, w = y.shape
        y = y.view(n, factor * factor, c4 // (factor * factor), h, w).transpose(1, 2).reshape(n, c4, h, w)
    return F.pixel_shuffle(y, factor)


@implements(op_defs.Squeeze)
class Squeeze(Bijection):
    """C x H x W -> 4C x H/2 x W/2 (RealNVP Sec. 3.6)."""

    def __init__(self, factor: int = 2, order: str = "channel_major"):
        super().__init__()
        self.factor, self.order = factor, order

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(args.factor, args.order)

    def forward(self, x, cond=None):
        return squeeze(x, self.factor, self.order), zeros_like_batch(x)

    def inverse_and_logdet(self, y, cond=None):
        return unsqueeze(y, self.factor, self.order), zeros_like_batch(y)


@implements(op_defs.Unsqueeze)
class Unsqueeze(Squeeze):
    """The inverse of Squeeze with the same order."""

    def forward(self, x, cond=None):
        return super().inverse_and_logdet(x)

    def inverse_and_logdet(self, y, cond=None):
        return super().forward(y)


@implements(op_defs.Swap)
class Swap(Bijection):
    """Exchange the two parts of a split: cat(x2, x1) for channels, even <-> odd columns."""

    def __init__(self, split: str = "channels"):
        super().__init__()
        self.split = split

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(args.split)

    def forward(self, x, cond=None):
        if self.split == "columns":
            n = x.shape[-1]
            return x.unflatten(-1, (n // 2, 2)).flip(-1).flatten(-2), zeros_like_batch(x)
        c1 = (x.shape[1] + 1) // 2
        return torch.cat([x[:, c1:], x[:, :c1]], 1), zeros_like_batch(x)

    def inverse_and_logdet(self, y, cond=None):
        if self.split == "columns":
            return self.forward(y)
        c1 = (y.shape[1] + 1) // 2
        c2 = y.shape[1] - c1
        return torch.cat([y[:, c2:], y[:, :c2]], 1), zeros_like_batch(y)
