"""Priors: the densities that score the final latents (and the dims dropped on the way)."""
from __future__ import annotations

from .registry import PRIOR, Op, register


@register
class Normal(Op):
    """Standard normal N(0, I) (the papers' eq. 3 / Flow++ / VFlow)."""

    summary = "standard normal prior N(0, I)"
    equation = "DenseFlow (Grcic et al. 2021) eq. 3; the base density of Flow++ and VFlow"
    shape_rule = "scores any shape"

    name = "normal"
    role = PRIOR
    layer = "augflow_dsl.layers.priors:Normal"


@register
class LearnedNormal(Op):
    """Diagonal Gaussian with a learned mean and log-std per channel, zero-initialised
    (DenseFlow's ConvNormal2d, normal.py:30-55: 2C parameters; the paper's eq. 3 says N(0, I),
    the reference code is followed)."""

    summary = "diagonal Gaussian prior with a learned mean and log-std per channel"
    equation = "DenseFlow normal.py:30-55 (ConvNormal2d; the paper's eq. 3 says N(0, I))"
    shape_rule = "scores C x H x W (or D) with 2C parameters"

    name = "learned_normal"
    role = PRIOR
    layer = "augflow_dsl.layers.priors:LearnedNormal"

    def params(self, a, shape, env):
        return 2 * shape[0]
