"""Dequantizers: integer data -> continuous data, with their ELBO terms."""
from __future__ import annotations

from pydantic import Field

from .net_descriptions import Act, Kept
from .registry import DEQUANTIZER, SCORED_BY_FIXED, MemoryIn, Op, OpArgs, OpCall, OpList, QFlow, register
from .supports import REAL, UNIT_HALF_OPEN, Integers, Support


class _Dequantizer(Op):
    """v = (x + u) / 2^bits: reads integer data of ``bits``; u must lie in [0, 1)^D, the unit bin,
    so that v lies in the bin of x and the bins tile [0, 1)^D (the bound log P(x) >= E[log p(v) -
    log r(u|x)] integrates p over exactly the bin of x)."""

    role = DEQUANTIZER

    def domain(self, a, bits):
        return Integers(bits)

    def noise_domain(self) -> Support:
        return UNIT_HALF_OPEN

    def noise(self) -> Support:
        """The set of u when no q hands it (variational: its q's sample; unknown here)."""
        return REAL

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """(x + u) / 2^bits keeps nothing (a variational q-network's tensors are counted from the graph)."""
        n = 1
        for s in shape:
            n *= s
        return Kept(Act(n, m.precision.flow))


@register
class Uniform(_Dequantizer):
    """Uniform dequantization (Theis et al. 2016): v = (x + u) / 2^bits, u ~ U[0, 1)^D;
    log p(x) >= log p(v) - D log 2^bits."""

    summary = "uniform dequantization: v = (x + u) / 2^bits, u ~ U[0, 1)"
    equation = "Flow++ (Ho et al. 2019) Sec. 3.1.1, eq. 4-6 (Theis et al. 2016)"
    shape_rule = "the data's shape, unchanged (then each op of `then`)"

    name = "uniform"
    role = DEQUANTIZER
    scored_by = SCORED_BY_FIXED

    class Args(OpArgs):
        then: OpList = Field(default_factory=list, description=(
            "bijections applied to the dequantized v before the flow, e.g. [logit(0.05)] or [shift(-0.5)]"))

    def noise(self) -> Support:
        """torch.rand: u in [0, 1)."""
        return UNIT_HALF_OPEN


@register
class Variational(_Dequantizer):
    """Variational dequantization (Flow++ Sec. 3.1.2, eq. 12): u ~ r(u | x) a conditional flow
    ending in (0, 1); v = (x + u) / 2^bits; log p(x) >= E[log p(v) - log r(u | x)] - D log 2^bits.
    ``then`` lists bijections applied to v before the flow (logit, shift), whose log-dets
    are part of p."""

    summary = "variational dequantization: u ~ r(u | x), a conditional flow (Flow++)"
    equation = "Flow++ (Ho et al. 2019) Sec. 3.1.2, eq. 8-12"
    shape_rule = "the data's shape, unchanged; q's flow must end at the data's shape"

    name = "variational"
    role = DEQUANTIZER

    class Args(OpArgs):
        q: QFlow = Field(description=(
            "the q-network r(u | x), defined with 'q NAME: ...', ending in (0, 1) (e.g. with sigmoid)"))
        then: OpList = Field(default_factory=list, description=(
            "bijections applied to the dequantized v before the flow, e.g. [logit(0.05)] or [shift(-0.5)]"))

    def qnets(self, a, shape, env):
        return {"q": (a.q, shape, "dequantizer")}


def default_dequantizer() -> OpCall:
    """What integer data gets when the spec names no dequantizer: uniform, nothing after."""
    return OpCall(Uniform.name, Uniform.Args(), None, "default: uniform dequantization")
