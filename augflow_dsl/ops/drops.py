"""Drops (factor-out): part of the tensor goes to a prior; the inverse samples it back."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .priors import Normal
from .net_descriptions import Act, Conv, Kept, Net, ZeroConv
from .conditional_priors import condition_in
from .registry import DROP, MemoryIn, Op, OpArgs, OpShapeError, register
from .reshape import Order, squeezed
from .shapes import numel, spatial


class _Drop(Op):
    """Kept and dropped parts are elements of the input: both lie in its set. The inverse puts the
    prior's sample (R) back, so it returns R."""

    role = DROP

    def image(self, a, s):
        return s


def _kept(shape):
    c = shape[0]
    if c < 2 or c % 2:
        raise OpShapeError(f"dropping half the channels needs an even channel count; got {c}; drop where the "
                           f"channel count is even (after a squeeze, or augment to an even count)")
    return (c // 2, *shape[1:])


@register
class SqueezeAndDrop(_Drop):
    """DenseFlow's transition (flow_modules.py:47-65): squeeze C x H x W -> 4C x H/2 x W/2, keep
    the first 2C channels, score the last 2C with a fixed N(0, I). Example: 62x16x16 -> keep
    124x8x8, drop 7,936 dims."""

    summary = "DenseFlow transition: squeeze, keep half the channels, send the rest to N(0, I)"
    equation = "DenseFlow (Grcic et al. 2021) Sec. 2.3; DenseFlow flow_modules.py:47-65"
    shape_rule = "C x H x W -> 2C x H/2 x W/2 kept (H and W even), 2C x H/2 x W/2 dropped"

    name = "squeeze_and_drop"
    role = DROP

    def dropped_density(self, a):
        return Normal.name

    class Args(OpArgs):
        order: Order = Field(default="channel_major", description="channel order of the squeeze (see squeeze)")

    def out_shape(self, a, shape, env):
        return _kept(squeezed(shape))

    def dropped(self, a, shape, env) -> int:
        return numel(shape) - numel(self.out_shape(a, shape, env))

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """The squeezed tensor (a new one; -0.5 z * z keeps z, a view of it) and -0.5 z; the kept
        half is a view of the squeezed tensor."""
        b, n = m.precision.flow, numel(shape)
        return Kept(Act(n // 2, b), own=n * b + n // 2 * b, alias="own")


@register
class FactorOut(_Drop):
    """Glow/RealNVP multi-scale factor-out (RealNVP Sec. 3.6): keep the first C/2 channels, score
    the rest with N(0, I) (``prior: normal``) or with a Gaussian whose mean and log-std come from
    a zero-initialised 3x3 conv of the kept half (``prior: conditional``, Glow's split prior).
    ``layout``, ``logscale`` and ``edge_bias`` state the openai/glow code's split2d_prior
    (model.py split2d_prior, tfops.py conv2d_zeros): mean and log-std interleaved in the conv's
    channels (h[..., 0::2], h[..., 1::2]), its output times exp(3 logs) with logs learned per
    channel, and the border channel of Glow's edge-biased convs."""

    summary = "multi-scale factor-out: keep half the channels, score the rest with a prior"
    equation = "RealNVP (Dinh et al. 2017) Sec. 3.6; Glow (Kingma & Dhariwal 2018) split prior"
    shape_rule = "C x H x W -> C/2 x H x W kept (C even), C/2 x H x W dropped"

    name = "factor_out"
    role = DROP

    class Args(OpArgs):
        prior: Literal["normal", "conditional"] = Field(default="normal", description=(
            "normal: N(0, I); conditional: a Gaussian whose mean and log-std come from a 3x3 conv of the kept half "
            "(Glow)"))
        layout: Literal["halves", "interleaved"] = Field(default="halves", description=(
            "conditional: which conv channels are the mean and which the log-std of the dropped half: halves (the "
            "first half, then the second) or interleaved (channels 2k, 2k+1 for dropped channel k: openai/glow "
            "split2d_prior)"))
        logscale: float | None = Field(default=None, gt=0, description=(
            "conditional: Glow's Conv2dZeros, the conv's output times exp(logscale * logs), logs learned per channel "
            "from 0 (openai/glow uses 3); none: a plain zero-initialised conv"))
        edge_bias: bool = Field(default=False, description=(
            "conditional: the conv also reads Glow's border channel (openai/glow tfops.py add_edge_padding)"))
        condition: bool = Field(default=False, description=(
            "true: the dropped half's per-channel mean and log-std also depend on the spec's condition, through a "
            "zero-initialised linear map of the one-hot label (or context vector), added to the conv's output "
            "(class-conditional factor-out, Glow's ycond at every level)"))

    def _check_args(self, a) -> None:
        if a.prior == "normal" and (a.layout != "halves" or a.logscale is not None or a.edge_bias):
            raise OpShapeError("`layout`, `logscale` and `edge_bias` shape the conditional prior's conv; "
                               "`prior: normal` has none: add `prior: conditional`")

    def out_shape(self, a, shape, env):
        self._check_args(a)
        return _kept(shape)

    def dropped(self, a, shape, env) -> int:
        return numel(shape) - numel(self.out_shape(a, shape, env))

    def dropped_density(self, a):
        return Normal.name

    def params(self, a, shape, env):
        """The conv's parameters (its description) and, with ``condition``, the linear map K -> C."""
        return super().params(a, shape, env) + ((condition_in(env, "factor_out(condition: true)") + 1) * shape[0]
                                                if a.condition else 0)

    def macs(self, a, shape, env):
        return super().macs(a, shape, env) + (condition_in(env, "factor_out") * shape[0] if a.condition else 0)

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """The dropped half is a view of x, kept by -0.5 z * z with -0.5 z (normal); conditional:
        the conv keeps the kept half (a view of x too) and the Gaussian keeps z - mu, exp(-log s),
        e and -0.5 e. The kept half is a view of x."""
        b, n = m.precision.flow, numel(shape)
        own = (n // 2 if a.prior == "normal" and not a.condition else 4 * (n // 2)) * b
        return Kept(Act(n // 2, b), own=own, input=True, alias="input")

    def describe(self, a, shape):
        """``conditional``: the zero-initialised 3x3 conv kept half -> (mean, log-std) of the rest."""
        if a.prior == "normal":
            return Net()
        if len(shape) != 3:
            raise OpShapeError("a conditional factor-out prior needs image data")
        h, w = spatial(shape)
        c, n = shape[0], h * w
        if a.logscale is not None:
            return Net((("conv", ZeroConv.of(c // 2, c, 3, n, a.logscale, a.edge_bias)),))
        return Net((("conv", Conv(c // 2, c, 3, n, init="zero", edge_bias=a.edge_bias)),))
