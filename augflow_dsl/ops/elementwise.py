"""Elementwise bijections: sigmoid, logit, shift. Each declares its support rules (ops/supports.py)."""
from __future__ import annotations

import math

from pydantic import Field

from .net_descriptions import Act, Kept
from .registry import BIJECTION, MemoryIn, Op, OpArgs, register
from .shapes import numel
from .supports import REAL, UNIT, Interval, as_interval, monotone_image, shifted, sigmoid


@register
class Sigmoid(Op):
    """y = sigmoid(x), log|dy/dx| = -softplus(-x) - softplus(x) (ends the Flow++ / DenseFlow
    dequantizers and VFlow's q, mapping to (0, 1)).

    Supports: reads R, returns (0, 1); its inverse, logit, reads only (0, 1). In a q-flow
    (noise -> sample) it runs forward; in the stages it runs forward when scoring and its
    inverse when sampling, where it meets the prior's samples (R) and is refused."""

    summary = "elementwise sigmoid, onto (0, 1)"
    equation = "y = 1 / (1 + exp(-x)), log|dy/dx| = -softplus(-x) - softplus(x)"
    shape_rule = "shape unchanged"

    name = "sigmoid"
    role = BIJECTION

    def image(self, a, s):
        s = as_interval(s)
        return Interval(sigmoid(s.lo), sigmoid(s.hi), s.lo_closed, s.hi_closed)  # R -> (0, 1)

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """sigmoid keeps its output; the log-det's softplus(-x) and softplus(x) keep -x and x."""
        b, n = m.precision.flow, numel(shape)
        return Kept(Act(n, b), own=n * b, input=True, output=True)

    def inverse_domain(self, a):
        return UNIT

    def inverse_fix(self, a):
        return ("remove the sigmoid from the stages: it maps onto (0, 1), which a prior on R cannot fill (part of "
                "the prior's mass has no x and samples give NaN); a sigmoid belongs at the end of a q-flow "
                "(noise -> (0, 1)), or after an input whose samples stay in (0, 1), e.g. before logit(alpha: 0)")


def _logit_domain(alpha: float) -> Interval:
    """The x with alpha + (1 - 2 alpha) x in (0, 1): (0, 1) for alpha 0, a little wider otherwise."""
    return Interval(-alpha / (1 - 2 * alpha), (1 - alpha) / (1 - 2 * alpha))


@register
class Logit(Op):
    """y = logit(alpha + (1 - 2 alpha) x) for x in (0, 1) (RealNVP Sec. 4.1, Flow++ ImgProc
    flows.py:254-268 with alpha = 0.05).

    Supports: reads ``(-alpha/(1-2 alpha), (1-alpha)/(1-2 alpha))`` ((0, 1) for alpha 0) and
    returns logit of it; its inverse reads R and returns that interval."""

    summary = "elementwise logit(alpha + (1 - 2 alpha) x), from (0, 1) onto the reals"
    equation = "RealNVP (Dinh et al. 2017) Sec. 4.1; Flow++ flows.py:254-268"
    shape_rule = "shape unchanged"

    name = "logit"
    role = BIJECTION

    class Args(OpArgs):
        alpha: float = Field(default=0.05, ge=0.0, lt=0.5, description=(
            "squeeze (0, 1) into (alpha, 1 - alpha) before the logit"))

    def domain(self, a, bits):
        return _logit_domain(a.alpha)

    def image(self, a, s):
        def f(x: float) -> float:
            p = a.alpha + (1 - 2 * a.alpha) * x
            return math.log(p) - math.log1p(-p)
        return monotone_image(s, f, _logit_domain(a.alpha))

    def inverse_image(self, a, s):
        return _logit_domain(a.alpha)

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """p = alpha + (1 - 2 alpha) x, kept by log(p), and -p twice (log1p(-p) in y and in the log-det)."""
        b, n = m.precision.flow, numel(shape)
        return Kept(Act(n, b), own=3 * n * b)

    def domain_fix(self, a):
        fix = ("logit reads values in (0, 1): put it right after dequantization (`dequantize: ..., "
               "then: logit(...)`) or after a sigmoid, not after a layer whose output is unbounded")
        if a.alpha == 0:
            fix += ("; with alpha 0 it needs the open (0, 1), which uniform noise u in [0, 1) can miss at 0: "
                    "give alpha > 0, e.g. logit(0.05)")
        return fix


@register
class Shift(Op):
    """y = x + by (DenseFlow's ScalarAffineBijection(shift=-0.5)); log-det 0. Supports: moves
    an interval by ``by``; R stays R."""

    summary = "elementwise y = x + by (log-det 0)"
    equation = "DenseFlow ScalarAffineBijection(shift=-0.5)"
    shape_rule = "shape unchanged"

    name = "shift"
    role = BIJECTION

    def image(self, a, s):
        return REAL if as_interval(s) == REAL else shifted(s, a.by)

    def inverse_image(self, a, s):
        return REAL if as_interval(s) == REAL else shifted(s, -a.by)

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """x + by keeps nothing."""
        return Kept(Act(numel(shape), m.precision.flow))

    class Args(OpArgs):
        by: float = Field(default=-0.5, description="the constant added to every element")
