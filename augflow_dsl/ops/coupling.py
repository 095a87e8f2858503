"""Coupling layers: affine (RealNVP / Glow / DenseFlow) and logistic-mixture CDF (Flow++)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .registry import BIJECTION, NetIO, Op, OpArgs, OpCall, OpShapeError, get, register
from .shapes import Split, halves, spatial


class _CouplingBase(Op):
    role = BIJECTION
    equal_halves = False

    def _io(self, a, shape, env) -> NetIO:
        x1, x2 = halves(a.split, shape, equal=self.equal_halves)
        h, w = spatial(x1)
        ctx = 0
        if env.context is not None:
            ctx = env.context[0]
            if len(env.context) == 3 and (env.context[1], env.context[2]) != (h, w):
                raise OpShapeError(
                    f"context is {env.context[1]}x{env.context[2]} but the coupling's halves are {h}x{w}")
        return NetIO(c_in=x1[0], c_out=self.out_per_channel(a) * x2[0], h=h, w=w, context=ctx)

    def out_per_channel(self, a) -> int:
        raise NotImplementedError

    def nets(self, a, shape, env):
        return {"net": (a.net, self._io(a, shape, env))}

    def out_shape(self, a, shape, env):
        io = self._io(a, shape, env)
        net = get(a.net.op)
        net.check_io(a.net.args, io)
        return shape

    def params(self, a, shape, env):
        return get(a.net.op).net_params(a.net.args, self._io(a, shape, env))

    def macs(self, a, shape, env):
        return get(a.net.op).net_macs(a.net.args, self._io(a, shape, env))

    def reads(self, a, shape):
        return f"identity part of the {a.split} split"

    def passthrough(self, a, shape):
        return f"identity part of the {a.split} split"


@register
class AffineCoupling(_CouplingBase):
    """Affine coupling (RealNVP eq. 7-8; DenseFlow affine_coupling.py): y1 = x1,
    y2 = x2 * s(x1) + t(x1), log|det J| = sum log s.

    ``scale`` picks the parameterisation of log s from the raw net output r:
    ``tanh2``: 2 tanh(r/2) (DenseFlow), ``sigmoid``: log sigmoid(r + 2) (Glow),
    ``exp``: r. ``layout: interleaved`` reads channel 2k as the scale and 2k+1 as the
    shift of x2[k] (DenseFlow ElementwiseParams2d); ``halves`` the first half as scales.
    """

    name = "affine_coupling"
    layer = "augflow_dsl.layers.coupling:AffineCoupling"

    class Args(OpArgs):
        net: OpCall
        split: Split = "channels"
        scale: Literal["tanh2", "sigmoid", "exp"] = "tanh2"
        layout: Literal["interleaved", "halves"] = "interleaved"

    def out_per_channel(self, a):
        return 2


@register
class MixtureCoupling(_CouplingBase):
    """Logistic-mixture CDF coupling (Flow++ eq. 17-20, flows.py:474-529):
    y2 = logit(MixLogCDF_K(x2; pi, mu, s)) * exp(a) + b with a = tanh(raw a) and the
    logistic log-scales clamped at -7; the net emits (a, b, K logits, K means, K log-scales)
    per transformed element, grouped per channel. ``logit: smooth`` is VFlow's
    logit(0.9 CDF + 0.05) (vflow flows.py:279-297). Inverse by safeguarded Newton on the
    bisection bracket (layers/mixture.py).
    """

    name = "mixture_coupling"
    layer = "augflow_dsl.layers.coupling:MixtureCoupling"
    equal_halves = True

    class Args(OpArgs):
        net: OpCall
        split: Split = "channels"
        components: int = Field(default=32, gt=0)
        logit: Literal["exact", "smooth"] = "exact"

    def out_per_channel(self, a):
        return 2 + 3 * a.components
