"""Elementwise bijections: sigmoid, logit, shift."""
from __future__ import annotations

from pydantic import Field

from .registry import BIJECTION, Op, OpArgs, register


@register
class Sigmoid(Op):
    """y = sigmoid(x), log|dy/dx| = -softplus(-x) - softplus(x) (ends the Flow++ / DenseFlow
    dequantizers and VFlow's q, mapping to (0, 1))."""

    summary = "elementwise sigmoid, onto (0, 1)"
    equation = "y = 1 / (1 + exp(-x)), log|dy/dx| = -softplus(-x) - softplus(x)"
    shape_rule = "shape unchanged"

    name = "sigmoid"
    role = BIJECTION
    layer = "augflow_dsl.layers.elementwise:Sigmoid"


@register
class Logit(Op):
    """y = logit(alpha + (1 - 2 alpha) x) for x in (0, 1) (RealNVP Sec. 4.1, Flow++ ImgProc
    flows.py:254-268 with alpha = 0.05)."""

    summary = "elementwise logit(alpha + (1 - 2 alpha) x), from (0, 1) onto the reals"
    equation = "RealNVP (Dinh et al. 2017) Sec. 4.1; Flow++ flows.py:254-268"
    shape_rule = "shape unchanged"

    name = "logit"
    role = BIJECTION
    layer = "augflow_dsl.layers.elementwise:Logit"

    class Args(OpArgs):
        alpha: float = Field(default=0.05, ge=0.0, lt=0.5, description=(
            "squeeze (0, 1) into (alpha, 1 - alpha) before the logit"))


@register
class Shift(Op):
    """y = x + by (DenseFlow's ScalarAffineBijection(shift=-0.5)); log-det 0."""

    summary = "elementwise y = x + by (log-det 0)"
    equation = "DenseFlow ScalarAffineBijection(shift=-0.5)"
    shape_rule = "shape unchanged"

    name = "shift"
    role = BIJECTION
    layer = "augflow_dsl.layers.elementwise:Shift"

    class Args(OpArgs):
        by: float = Field(default=-0.5, description="the constant added to every element")
