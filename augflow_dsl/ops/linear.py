"""conv1x1: Glow's invertible 1x1 convolution, LU-parameterised or with a full weight."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .net_descriptions import Act, Kept
from .registry import BIJECTION, MemoryIn, Op, OpArgs, register
from .regions import Region
from .shapes import halves, numel, spatial


@register
class Conv1x1(Op):
    """Invertible 1x1 convolution (Glow, Kingma & Dhariwal 2018, eq. 9-10): y = W x per position,
    log|det J| = H*W*log|det W|.

    ``param: lu`` stores W = P L (U + diag(s)) (Glow Sec. 3.2; C^2 trainable numbers: strict L,
    strict U, log|s|); ``param: full`` stores W itself with slogdet, as the DenseFlow code does
    (conv1x1.py:29-84; the paper says LU, the reference code is followed). ``split: channels``
    or ``columns`` applies one matrix per half, as the Flow++ code does (flows.py:368-420).
    ``bias: true`` adds a learned per-channel bias, y = W x + b (C more parameters, zero at init), as
    the Neural Spline Flows code's 1x1 convolution does (bayesiains/nsf nde/transforms/linear.py:40,
    ``LULinear``'s ``bias``); the log-det is unchanged.
    Cost: C^2 MACs per position; forming W and its determinant, O(C^3), once per batch.
    """

    summary = "invertible 1x1 convolution, LU or full weight (Glow)"
    equation = "Glow (Kingma & Dhariwal 2018) eq. 9-10, Sec. 3.2; DenseFlow conv1x1.py:29-84; Flow++ flows.py:368-420"
    shape_rule = "shape unchanged; `split: channels` needs C even, `split: columns` W even"

    name = "conv1x1"
    role = BIJECTION

    class Args(OpArgs):
        param: Literal["lu", "full"] = Field(default="lu", description=(
            "lu: W = P L (U + diag(s)) (Glow Sec. 3.2); full: W itself with slogdet (DenseFlow code)"))
        split: Literal["none", "channels", "columns"] = Field(default="none", description=(
            "none, or one matrix per half of a channel or even/odd-column split (Flow++ code)"))
        init: Literal["orthogonal", "identity"] = Field(default="orthogonal", description=(
            "orthogonal: a random rotation; identity: W = I"))
        noise: float = Field(default=0.0, description=(
            "standard deviation of noise added to the initial weight (0: none)"))
        bias: bool = Field(default=False, description=(
            "true: y = W x + b with a learned per-channel b, zero at init (NSF code's LULinear); C more parameters"))

    def _mat(self, a, shape):
        if a.split == "none":
            return shape[0], 1
        part, _ = halves(a.split, shape, equal=True)
        return part[0], 2

    def out_shape(self, a, shape, env):
        self._mat(a, shape)
        return shape

    def params(self, a, shape, env):
        c, n = self._mat(a, shape)
        return n * c * c + (shape[0] if a.bias else 0)

    def macs(self, a, shape, env):
        h, w = spatial(shape)
        return shape[0] * shape[0] * max(h * w, 1) // (2 if a.split == "channels" else 1)

    def mixes(self, a, shape):
        """Every output element is a combination of the channels (of its half) at its position."""
        return Region.whole(shape) if self._mat(a, shape)[0] >= 2 else None

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """The product keeps x (its halves are views of it); per batch, each matrix's pieces: its LU
        factors and pivots (full, slogdet), or L, U and their products (lu)."""
        c, mats = self._mat(a, shape)
        per = c * c * 4 + c * 8 if a.param == "full" else 4 * c * c * 4 + c * (c - 1) // 2 * 8 + 2 * c * 4
        return Kept(Act(numel(shape), m.precision.flow), input=True, fixed=mats * per)
