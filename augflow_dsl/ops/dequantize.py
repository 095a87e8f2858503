"""Dequantizers: integer data -> continuous data, with their ELBO terms."""
from __future__ import annotations

from pydantic import Field

from .registry import DEQUANTIZER, Op, OpArgs, OpCall, OpList, QFlow, register


@register
class Uniform(Op):
    """Uniform dequantization (Theis et al. 2016): v = (x + u) / 2^bits, u ~ U[0, 1)^D;
    log p(x) >= log p(v) - D log 2^bits."""

    name = "uniform"
    role = DEQUANTIZER
    layer = "augflow_dsl.layers.dequantize:Uniform"

    class Args(OpArgs):
        then: OpList = Field(default_factory=list)


@register
class Variational(Op):
    """Variational dequantization (Flow++ Sec. 3.1.2, eq. 12): u ~ r(u | x) a conditional flow
    ending in (0, 1); v = (x + u) / 2^bits; log p(x) >= E[log p(v) - log r(u | x)] - D log 2^bits.
    ``then`` lists bijections applied to v before the flow (logit, shift), whose log-dets
    are part of p."""

    name = "variational"
    role = DEQUANTIZER
    layer = "augflow_dsl.layers.dequantize:Variational"

    class Args(OpArgs):
        q: QFlow
        then: OpList = Field(default_factory=list)

    def qnets(self, a, shape, env):
        return {"q": (a.q, shape, "dequantizer")}


def default_dequantizer() -> OpCall:
    """What integer data gets when the spec names no dequantizer: uniform, nothing after."""
    return OpCall(Uniform.name, Uniform.Args(), None, "default: uniform dequantization")
