"""reverse, shuffle: fixed channel permutations (log-det 0, no parameters), beside conv1x1."""
from __future__ import annotations

import random

from pydantic import Field

from .net_descriptions import Act, Kept
from .registry import MemoryIn, OpArgs, OpShapeError, register
from .reshape import Rearrangement
from .shapes import numel


class _Permutation(Rearrangement):
    """A fixed permutation of the channels (features, for vector data), the same at every position.
    Like swap it moves elements between channels: it changes every element (the defaults of
    ``reads`` and ``unchanged``) and declares where each goes (``moves``, for the coverage audit)."""

    shape_rule = "shape unchanged; C >= 2 channels (features)"

    def permutation(self, a, c: int) -> list[int]:
        """Output channel k is input channel ``permutation(a, c)[k]`` (the layer's own list)."""
        raise NotImplementedError

    def out_shape(self, a, shape, env):
        if shape[0] < 2:
            raise OpShapeError(f"{self.name} permutes channels and needs at least 2; got {shape[0]}")
        return shape

    def moves(self, a, shape):
        """Output element k (flat, channel-major) is input element moves[k]."""
        plane = numel(shape[1:])
        return [src * plane + p for src in self.permutation(a, shape[0]) for p in range(plane)]


@register
class Reverse(_Permutation):
    """Reverse the order of the channels (features): y[c] = x[C - 1 - c] (RealNVP's and Glow's
    'reverse' permutation, Glow Sec. 3.2; nflows ReversePermutation)."""

    summary = "reverse the channel (feature) order"
    equation = "Glow (Kingma & Dhariwal 2018) Sec. 3.2, 5.1 (reverse); nflows ReversePermutation"

    name = "reverse"

    def permutation(self, a, c):
        return list(range(c - 1, -1, -1))


@register
class Shuffle(_Permutation):
    """A fixed random permutation of the channels (features): y[c] = x[perm[c]], perm drawn from
    ``seed`` (Python's ``random.Random(seed).shuffle``, here, in pure Python, so the audit and the
    layer share one list) and stored by the layer as a buffer, so it is saved with the model and
    exported (Glow Sec. 3.2, 5.1 'shuffle'; nflows RandomPermutation)."""

    summary = "a fixed random channel (feature) permutation drawn from a seed"
    equation = "Glow (Kingma & Dhariwal 2018) Sec. 3.2, 5.1 (shuffle); nflows RandomPermutation"

    name = "shuffle"

    class Args(OpArgs):
        seed: int = Field(ge=0, description="the seed the permutation is drawn from, at build time")

    def permutation(self, a, c):
        perm = list(range(c))
        random.Random(a.seed).shuffle(perm)
        return perm

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """Indexing keeps its C indices (int64, per batch); the output is new."""
        return Kept(Act(numel(shape), m.precision.flow), fixed=8 * shape[0])
