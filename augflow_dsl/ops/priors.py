"""Priors: the densities that score the final latents (and the dims dropped on the way)."""
from __future__ import annotations

from .net_descriptions import Act, Kept
from .registry import PRIOR, MemoryIn, Op, OpCall, register


@register
class Normal(Op):
    """Standard normal N(0, I) (the papers' eq. 3 / Flow++ / VFlow)."""

    summary = "standard normal prior N(0, I)"
    equation = "DenseFlow (Grcic et al. 2021) eq. 3; the base density of Flow++ and VFlow"
    shape_rule = "scores any shape"

    name = "normal"
    role = PRIOR

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """Scoring z: -0.5 z * z keeps z and -0.5 z. As a q-network's base it draws z (no gradient):
        nothing."""
        b, n = m.precision.flow, _numel(shape)
        if m.base:
            return Kept(Act(n, b))
        return Kept(Act(0, b), own=n * b, input=True)


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

    def params(self, a, shape, env):
        return 2 * shape[0]

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """Scoring z: (z - mu) * exp(-log s) keeps z - mu, then -0.5 e * e keeps e and -0.5 e. As a
        q-network's base, mu + exp(log s) * eps keeps eps, then its sample is scored."""
        b, n = m.precision.flow, _numel(shape)
        return Kept(Act(n if m.base else 0, b), own=(4 if m.base else 3) * n * b)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def default_prior(loc=None) -> OpCall:
    """The prior (and q-network base) a spec gets when it names none: N(0, I)."""
    return OpCall(Normal.name, Normal.Args(), loc)
