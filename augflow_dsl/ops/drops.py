"""Drops (factor-out): part of the tensor goes to a prior; the inverse samples it back."""
from __future__ import annotations

from typing import Literal

from .priors import Normal
from .registry import DROP, Op, OpArgs, OpShapeError, conv_macs, conv_params, register
from .reshape import Order, squeezed
from .shapes import numel, spatial


def _kept(shape):
    c = shape[0]
    if c < 2 or c % 2:
        raise OpShapeError(f"dropping half the channels needs an even channel count; got {c}")
    return (c // 2, *shape[1:])


@register
class SqueezeAndDrop(Op):
    """DenseFlow's transition (flow_modules.py:47-65): squeeze C x H x W -> 4C x H/2 x W/2, keep
    the first 2C channels, score the last 2C with a fixed N(0, I). Example: 62x16x16 -> keep
    124x8x8, drop 7,936 dims."""

    name = "squeeze_and_drop"
    role = DROP
    layer = "augflow_dsl.layers.drops:SqueezeAndDrop"

    def dropped_density(self, a):
        return Normal.name

    class Args(OpArgs):
        order: Order = "channel_major"

    def out_shape(self, a, shape, env):
        return _kept(squeezed(shape))

    def dropped(self, a, shape, env) -> int:
        return numel(shape) - numel(self.out_shape(a, shape, env))


@register
class FactorOut(Op):
    """Glow/RealNVP multi-scale factor-out (RealNVP Sec. 3.6): keep the first C/2 channels, score
    the rest with N(0, I) (``prior: normal``) or with a Gaussian whose mean and log-std come from
    a zero-initialised 3x3 conv of the kept half (``prior: conditional``, Glow's split prior)."""

    name = "factor_out"
    role = DROP
    layer = "augflow_dsl.layers.drops:FactorOut"

    class Args(OpArgs):
        prior: Literal["normal", "conditional"] = "normal"

    def out_shape(self, a, shape, env):
        return _kept(shape)

    def dropped(self, a, shape, env) -> int:
        return numel(shape) - numel(self.out_shape(a, shape, env))

    def dropped_density(self, a):
        return Normal.name

    def params(self, a, shape, env):
        if a.prior == "normal":
            return 0
        if len(shape) != 3:
            raise OpShapeError("a conditional factor-out prior needs image data")
        return conv_params(3, shape[0] // 2, shape[0])

    def macs(self, a, shape, env):
        if a.prior == "normal":
            return 0
        h, w = spatial(shape)
        return conv_macs(3, shape[0] // 2, shape[0], h * w)
