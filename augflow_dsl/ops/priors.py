"""Priors: the densities that score the final latents (and the dims dropped on the way)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .net_descriptions import Act, Kept, Net, ZeroConv
from .registry import PRIOR, MemoryIn, Op, OpArgs, OpCall, OpShapeError, register


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
    the reference code is followed). ``param: glow_learntop`` is openai/glow's ``--learntop`` top
    prior (model.py prior): (mean, log-std) = Conv2dZeros of a zero tensor of 2C channels, a 3x3
    conv with Glow's edge bias (tfops.py add_edge_padding) times exp(3 logs), mean the first C
    channels and log-std the last C. Inside the image that is a mean and log-std per channel; at
    the border the weights on the edge channel add a learned offset per border pattern. The
    9 x 2C x 2C weights on the zero channels never change the output (nor get a gradient); they
    are trainable variables of the reference graph, so they are built and counted:
    9 (2C + 1) 2C + 4C parameters."""

    summary = "diagonal Gaussian prior with a learned mean and log-std per channel"
    equation = "DenseFlow normal.py:30-55 (ConvNormal2d; the paper's eq. 3 says N(0, I))"
    shape_rule = "scores C x H x W (or D) with 2C parameters"

    name = "learned_normal"
    role = PRIOR

    class Args(OpArgs):
        param: Literal["channel", "glow_learntop"] = Field(default="channel", description=(
            "channel: a mean and log-std per channel (2C); glow_learntop: openai/glow's --learntop prior, a "
            "Conv2dZeros (3x3, edge bias, logscale 3) of a zero tensor of 2C channels (image data)"))

    def describe(self, a, shape):
        """``glow_learntop``: the Conv2dZeros reading 2C zero channels and giving (mean, log-std)."""
        if a.param == "channel":
            return Net()
        if len(shape) != 3:
            raise OpShapeError("`param: glow_learntop` is a conv over the latent's positions: it needs image data")
        c, n = 2 * shape[0], shape[1] * shape[2]
        return Net((("conv", ZeroConv.of(c, c, 3, n, 3.0, edge_bias=True)),))

    def params(self, a, shape, env):
        return 2 * shape[0] if a.param == "channel" else super().params(a, shape, env)

    def macs(self, a, shape, env):
        """No MACs per example: ``glow_learntop``'s conv reads no data, it runs once per batch."""
        self.describe(a, shape)
        return 0

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
