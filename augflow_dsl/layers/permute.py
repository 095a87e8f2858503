"""Reverse, Shuffle: fixed channel permutations with log-det 0."""
from __future__ import annotations

import torch

from ..ops import permute as op_defs
from .base import Bijection, zeros_like_batch
from .registry import implements


@implements(op_defs.Reverse)
class Reverse(Bijection):
    """y[:, c] = x[:, C - 1 - c]; its own inverse."""

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls()

    def forward(self, x, cond=None):
        return x.flip(1), zeros_like_batch(x)

    def inverse_and_logdet(self, y, cond=None):
        return self.forward(y)


@implements(op_defs.Shuffle)
class Shuffle(Bijection):
    """y[:, c] = x[:, perm[c]], perm the op's list for the seed (ops/permute.py, drawn at build time);
    buffers ``perm`` and its inverse, saved in the state dict, so a loaded model keeps its permutation."""

    def __init__(self, perm: list[int]):
        super().__init__()
        p = torch.tensor(perm, dtype=torch.long)
        self.register_buffer("perm", p)
        self.register_buffer("inverse_perm", torch.argsort(p))

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(op_defs.Shuffle().permutation(args, shape[0]))

    def forward(self, x, cond=None):
        return x.index_select(1, self.perm), zeros_like_batch(x)

    def inverse_and_logdet(self, y, cond=None):
        return y.index_select(1, self.inverse_perm), zeros_like_batch(y)
