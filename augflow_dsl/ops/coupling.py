"""Coupling layers: affine (RealNVP / Glow / DenseFlow) and logistic-mixture CDF (Flow++)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .net_descriptions import Act, Kept
from .registry import BIJECTION, MemoryIn, NetIO, Op, OpArgs, OpCall, OpShapeError, get, register
from .regions import split_parts
from .shapes import Split, halves, numel, spatial


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

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """x2 * exp(log s) keeps x (x2 is a view of it; a checkerboard keeps x itself) and exp(log s);
        log s keeps tanh's output (tanh2), log_sigmoid's input and buffer (sigmoid) or nothing
        (exp). A checkerboard's net reads x * mask, a new tensor; its products keep the H x W mask
        and 1 - mask (per batch)."""
        b, n = m.precision.flow, numel(shape)
        net = m.nets.get("net")
        fixed = 0
        if a.split == "checkerboard":
            e2, own, fixed = n, (n * b if net is not None and net.input else 0), 3 * shape[1] * shape[2] * 4
        else:
            e2, own = numel(halves(a.split, shape)[1]), 0
        own += {"tanh2": 2, "sigmoid": 3, "exp": 1}[a.scale] * e2 * b
        return Kept(Act(n, b), own=own, input=True, fixed=fixed)


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
    equal_halves = True

    class Args(OpArgs):
        net: OpCall = Field(description=(
            "the conditioner net that computes the mixture parameters, e.g. conv_attention(filters: 96)"))
        split: Split = Field(default="channels", description=(
            "which elements condition which: channels (equal halves) or columns (even columns; the Flow++ "
            "code's 'checkerboard'); checkerboard (a 2-D mask) is refused: the mixture has no masked form"))
        components: int = Field(default=32, gt=0, description="number K of logistic mixture components")
        logit: Literal["exact", "smooth"] = Field(default="exact", description=(
            "exact: logit(CDF) (Flow++); smooth: logit(0.9 CDF + 0.05) (VFlow)"))

    def out_per_channel(self, a):
        return 2 + 3 * a.components

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """Per transformed element: the net's output (clamping the log-scales keeps it, they are a
        view of it); K-sized log_softmax, exp(-log s), x - mu, z, log_sigmoid's buffer and the
        three logsumexps' inputs; tanh(a), the logsumexps' outputs, logit F and exp(a); smooth adds
        exp(log F), c and -c. x itself is kept only when the net keeps its view x1."""
        b = m.precision.flow
        e2, k = numel(halves(a.split, shape, equal=True)[1]), a.components
        per = (2 + 3 * k) + 8 * k + 6 + (3 if a.logit == "smooth" else 0)
        net = m.nets.get("net")
        return Kept(Act(numel(shape), b), own=per * e2 * b, input=net is not None and net.input)

    def _io(self, a, shape, env):
        if a.split == "checkerboard":  # layers/coupling.py splits tensors; a mask has no halves to mix
            raise OpShapeError("mixture_coupling splits the tensor into halves and has no checkerboard mask; "
                               "use `split: columns` (the Flow++ code's 'checkerboard' is the even/odd-column "
                               "split) or `split: channels`")
        return super()._io(a, shape, env)
