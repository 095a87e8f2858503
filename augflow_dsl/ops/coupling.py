"""Coupling layers: affine (RealNVP / Glow / DenseFlow) and logistic-mixture CDF (Flow++)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .registry import BIJECTION, NetIO, Op, OpArgs, OpCall, OpShapeError, get, register
from .regions import split_parts
from .shapes import Split, halves, spatial


def _context_fix(op, a, shape, context) -> str:
    """What would make a coupling's halves meet its q's context: the splits whose parts have the
    context's resolution (e.g. gated_context is column-split: use ``split: columns``)."""
    fits = []
    for split in ("columns", "channels", "checkerboard"):
        try:
            x1, _ = halves(split, shape, equal=op.equal_halves)
        except OpShapeError:
            continue
        if split != a.split and spatial(x1) == tuple(context[1:]):
            fits.append(split)
    if fits:
        return "; the context has the resolution of a " + " or ".join(f"'{s}'" for s in fits) + \
            " split's halves: use " + " or ".join(f"`split: {s}`" for s in fits)
    return (f"; no split of a {'x'.join(map(str, shape))} input has {context[1]}x{context[2]} halves: "
            "move the coupling to where the data has that resolution (squeeze / unsqueeze), or use a context "
            "net of the coupling's resolution")


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
                    f"context is {env.context[1]}x{env.context[2]} but the coupling's halves are {h}x{w}"
                    + _context_fix(self, a, shape, env.context))
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
        """The net reads x1 (layers/coupling.py: ``split(x)[0]``, or ``x * mask`` for a checkerboard)."""
        return split_parts(a.split, shape)[0]

    def unchanged(self, a, shape):
        """y1 = x1: the identity part of the split passes through."""
        return split_parts(a.split, shape)[0]


@register
class AffineCoupling(_CouplingBase):
    """Affine coupling (RealNVP eq. 7-8; DenseFlow affine_coupling.py): y1 = x1,
    y2 = x2 * s(x1) + t(x1), log|det J| = sum log s.

    ``scale`` picks the parameterisation of log s from the raw net output r:
    ``tanh2``: 2 tanh(r/2) (DenseFlow), ``sigmoid``: log sigmoid(r + 2) (Glow),
    ``exp``: r. ``layout: interleaved`` reads channel 2k as the scale and 2k+1 as the
    shift of x2[k] (DenseFlow ElementwiseParams2d); ``halves`` the first half as scales.
    """

    summary = "affine coupling: x2 scaled and shifted by a net reading x1"
    equation = "RealNVP (Dinh et al. 2017) eq. 7-8; DenseFlow affine_coupling.py"
    shape_rule = ("shape unchanged; the split must apply (channels: C >= 2; columns: W even; checkerboard: H*W >= 2); "
                  "the net maps the identity part's channels to 2 x the transformed part's channels")

    name = "affine_coupling"
    layer = "augflow_dsl.layers.coupling:AffineCoupling"

    class Args(OpArgs):
        net: OpCall = Field(description=(
            "the conditioner net that computes (log s, t) from the identity part, e.g. glow_net(filters: 512)"))
        split: Split = Field(default="channels", description=(
            "which elements condition which: channels (first ceil(C/2) channels), columns (even columns), "
            "checkerboard (2-D mask)"))
        scale: Literal["tanh2", "sigmoid", "exp"] = Field(default="tanh2", description=(
            "log s from the raw net output r: tanh2 = 2 tanh(r/2), sigmoid = log sigmoid(r + 2), exp = r"))
        layout: Literal["interleaved", "halves"] = Field(default="interleaved", description=(
            "interleaved: net channel 2k scales and 2k+1 shifts x2[k] (DenseFlow); halves: scales first, then shifts"))

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

    summary = "logistic-mixture CDF coupling (Flow++), inverted by safeguarded Newton"
    equation = ("Flow++ (Ho et al. 2019) eq. 17-20; flowpp flows.py:474-529; VFlow's smooth logit: vflow "
                "flows.py:279-297")
    shape_rule = ("shape unchanged; the split must give equal halves (channels: C even; columns: W even); the net maps "
                  "C1 channels to (2 + 3 components) x C2")

    name = "mixture_coupling"
    layer = "augflow_dsl.layers.coupling:MixtureCoupling"
    equal_halves = True

    class Args(OpArgs):
        net: OpCall = Field(description=(
            "the conditioner net that computes the mixture parameters, e.g. conv_attention(filters: 96)"))
        split: Split = Field(default="channels", description=(
            "which elements condition which: channels (equal halves), columns (even columns), checkerboard"))
        components: int = Field(default=32, gt=0, description="number K of logistic mixture components")
        logit: Literal["exact", "smooth"] = Field(default="exact", description=(
            "exact: logit(CDF) (Flow++); smooth: logit(0.9 CDF + 0.05) (VFlow)"))

    def out_per_channel(self, a):
        return 2 + 3 * a.components

    def _io(self, a, shape, env):
        if a.split == "checkerboard":  # layers/coupling.py splits tensors; a mask has no halves to mix
            raise OpShapeError("mixture_coupling splits the tensor into halves and has no checkerboard mask; "
                               "use `split: columns` (the Flow++ code's 'checkerboard' is the even/odd-column "
                               "split) or `split: channels`")
        return super()._io(a, shape, env)
