"""Coupling layers: affine (RealNVP / Glow / DenseFlow) and logistic-mixture CDF (Flow++)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .net_descriptions import Act, Kept
from .registry import BIJECTION, MemoryIn, NetIO, Op, OpArgs, OpCall, OpShapeError, get, register
from .regions import split_parts
from .shapes import Parity, Split, halves, numel, spatial


# the opening of every masked coupling's shape rule
SPLIT_APPLIES = "shape unchanged; the split must apply (channels: C >= 2; columns: W even; checkerboard: H*W >= 2); "
CONDITION_DOC = ("true: the net also reads the spec's `condition:` (its embedding, or the one-hot label / "
                 "vector), broadcast over positions and concatenated to the net's input as context channels")


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


def condition_width(a, env) -> int:
    """Channels a coupling's net reads from the spec's condition (``condition: true``): the
    embedding's width (or K / D without one), broadcast over the halves' positions and concatenated
    after any q-network context. A coupling asking for a condition the spec does not declare is
    refused here, at the coupling."""
    if not getattr(a, "condition", False):
        return 0
    if env.condition is None:
        raise OpShapeError("`condition: true` asks for the spec's condition, but the spec declares none: add "
                           "`condition: {classes: K}` (a label) or `condition: {vector: D}` (a context vector)")
    return env.condition


def _parity(a) -> str:
    """A checkerboard's parity; ops without the argument use RealNVP's first mask, i + j even."""
    return getattr(a, "parity", "even")


class _CouplingBase(Op):
    role = BIJECTION
    equal_halves = False

    def _io(self, a, shape, env) -> NetIO:
        if _parity(a) != "even" and a.split != "checkerboard":
            raise OpShapeError(f"`parity: {_parity(a)}` picks a checkerboard's squares; a {a.split} split has none: "
                               "use `split: checkerboard`, or alternate a channel or column split with `swap`")
        x1, x2 = halves(a.split, shape, equal=self.equal_halves)
        h, w = spatial(x1)
        ctx = condition_width(a, env)
        if env.context is not None:
            ctx += env.context[0]
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
        return split_parts(a.split, shape, _parity(a))[0]

    def unchanged(self, a, shape):
        """y1 = x1: the identity part of the split passes through (a checkerboard's squares of its parity)."""
        return split_parts(a.split, shape, _parity(a))[0]


class _MaskedArgs(OpArgs):
    """The arguments of a coupling with a split or a checkerboard mask (affine, additive)."""

    net: OpCall = Field(description="the conditioner net reading the identity part")
    split: Split = Field(default="channels", description=(
        "which elements condition which: channels (first ceil(C/2) channels), columns (even columns), "
        "checkerboard (2-D mask)"))
    parity: Parity = Field(default="even", description=(
        "checkerboard only: the squares that stay unchanged and condition the others, even (i + j even) or "
        "odd; alternate them, as RealNVP does, so that every element is transformed"))
    condition: bool = Field(default=False, description=CONDITION_DOC)


def _masked_memory(a, shape, m: MemoryIn, masks: int) -> tuple[int, int, int, bool]:
    """(transformed elements, bytes of x * mask when the net keeps it, bytes of ``masks`` H x W masks,
    whether the net keeps a view of x): a checkerboard transforms (and its net reads) the whole tensor,
    its net x * mask; a split, the second part, its net x1, a view of x."""
    net = m.nets.get("net")
    keeps = net is not None and net.input
    if a.split != "checkerboard":
        return numel(halves(a.split, shape)[1]), 0, 0, keeps
    n = numel(shape)
    return n, (n * m.precision.flow if keeps else 0), masks * shape[1] * shape[2] * 4, False


@register
class AffineCoupling(_CouplingBase):
    """Affine coupling (RealNVP eq. 7-8; DenseFlow affine_coupling.py): y1 = x1,
    y2 = x2 * s(x1) + t(x1), log|det J| = sum log s.

    ``scale`` picks the parameterisation of log s from the raw net output r plus ``offset``
    (u = r + offset; offset none: 2 for sigmoid, else 0): ``tanh2``: 2 tanh(u/2) (DenseFlow),
    ``sigmoid``: log sigmoid(u) (Glow), ``exp``: u, ``softclamp``: clamp 0.636 atan(u) (FrEIA's
    ATAN clamp); ``eps`` adds a floor, s = exp(log s) + eps (nflows: sigmoid(r + 2) + 1e-3).
    ``order: shift_then_scale`` computes y2 = (x2 - t) s instead (normflows, density direction).
    ``layout: interleaved`` reads net channels 2k and 2k+1 as the pair of x2[k] (DenseFlow
    ElementwiseParams2d); ``halves`` the first half and the second; ``first`` says which of the
    pair is the scale (scale: DenseFlow, Glow; shift: nflows, normflows).
    ``split: checkerboard`` keeps the squares of its ``parity`` (i + j even, or odd) and transforms
    the others; RealNVP alternates the two (Sec. 3.4), which the coverage audit checks.
    """

    summary = "affine coupling: x2 scaled and shifted by a net reading x1"
    equation = "RealNVP (Dinh et al. 2017) eq. 7-8; DenseFlow affine_coupling.py"
    shape_rule = SPLIT_APPLIES + "the net maps the identity part's channels to 2 x the transformed part's channels"

    name = "affine_coupling"

    class Args(_MaskedArgs):
        net: OpCall = Field(description=(
            "the conditioner net that computes (log s, t) from the identity part, e.g. glow_net(filters: 512)"))
        scale: Literal["tanh2", "sigmoid", "exp", "softclamp"] = Field(default="tanh2", description=(
            "log s from u = raw net output + offset: tanh2 = 2 tanh(u/2), sigmoid = log sigmoid(u), exp = u, "
            "softclamp = clamp 0.636 atan(u) (FrEIA)"))
        layout: Literal["interleaved", "halves"] = Field(default="interleaved", description=(
            "interleaved: net channels 2k, 2k+1 are the (scale, shift) pair of x2[k] (DenseFlow); halves: the "
            "first half of the channels, then the second"))
        first: Literal["scale", "shift"] = Field(default="scale", description=(
            "which of each pair the net emits first: scale (DenseFlow, Glow) or shift (nflows, normflows)"))
        offset: float | None = Field(default=None, description=(
            "added to the raw scale before the nonlinearity; none: 2 for sigmoid (Glow), 0 otherwise"))
        eps: float = Field(default=0.0, ge=0, description="a floor added to the scale: s = exp(log s) + eps "
                           "(nflows: 1e-3)")
        clamp: float = Field(default=2.0, gt=0, description="softclamp's factor: log s = clamp 0.636 atan(u)")
        order: Literal["scale_then_shift", "shift_then_scale"] = Field(default="scale_then_shift", description=(
            "scale_then_shift: y2 = x2 s + t (RealNVP); shift_then_scale: y2 = (x2 - t) s (normflows)"))

    def out_per_channel(self, a):
        return 2

    @staticmethod
    def offset(a) -> float:
        """The offset added to the raw scale: the argument, or the scale's own (2 for sigmoid, Glow)."""
        return a.offset if a.offset is not None else (2.0 if a.scale == "sigmoid" else 0.0)

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """x2 * exp(log s) keeps x (x2 is a view of it; a checkerboard keeps x itself) and exp(log s);
        log s keeps tanh's output (tanh2), log_sigmoid's input and buffer (sigmoid), atan's input
        (softclamp) or nothing (exp), an input that is r + offset or, offset 0, r, a view of the whole
        net output (2 x the elements); eps keeps s = exp(log s) + eps too (log reads it), and
        shift_then_scale x2 - t instead of x. A checkerboard's net reads x * mask, a new tensor; its
        products keep the H x W mask and 1 - mask (per batch)."""
        e2, own, fixed, net_keeps_x = _masked_memory(a, shape, m, masks=3)
        kept_in = 1 if self.offset(a) else 2
        own += ({"tanh2": 2, "sigmoid": 2 + kept_in, "exp": 1, "softclamp": 1 + kept_in}[a.scale] + (a.eps > 0)
                + (a.order == "shift_then_scale")) * e2 * m.precision.flow
        return Kept(Act(numel(shape), m.precision.flow), own=own, fixed=fixed,
                    input=a.order == "scale_then_shift" or net_keeps_x)


@register
class AdditiveCoupling(_CouplingBase):
    """Additive coupling (NICE, Dinh et al. 2014, eq. 6): y1 = x1, y2 = x2 + t(x1), log|det J| = 0;
    the inverse is x2 = y2 - t(y1). The net emits only the shift, one channel per transformed
    channel (half of affine_coupling's)."""

    summary = "additive coupling (NICE): x2 shifted by a net reading x1, log-det 0"
    equation = "NICE (Dinh et al. 2014) eq. 6"
    shape_rule = SPLIT_APPLIES + "the net maps the identity part's channels to the transformed part's channels"

    name = "additive_coupling"

    class Args(_MaskedArgs):
        net: OpCall = Field(description=(
            "the conditioner net that computes the shift t from the identity part, e.g. glow_net(filters: 512)"))

    def out_per_channel(self, a):
        return 1

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """x2 + t keeps nothing; a checkerboard's net reads x * mask, a new tensor, and its products keep
        the H x W mask and 1 - mask (per batch). x is kept only where the net keeps its view x1."""
        _, own, fixed, net_keeps_x = _masked_memory(a, shape, m, masks=2)
        return Kept(Act(numel(shape), m.precision.flow), own=own, input=net_keeps_x, fixed=fixed)


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
        condition: bool = Field(default=False, description=CONDITION_DOC)

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
