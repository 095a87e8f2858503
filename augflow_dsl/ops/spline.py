"""Spline couplings: monotonic rational-quadratic splines (Neural Spline Flows, Durkan et al. 2019)."""
from __future__ import annotations

from pydantic import Field, model_validator

from .coupling import SPLIT_APPLIES, _CouplingBase, _MaskedArgs
from .net_descriptions import Act, Kept
from .registry import MemoryIn, OpCall, register
from .shapes import halves, numel
from .supports import Interval, join


@register
class RQSplineCoupling(_CouplingBase):
    """Rational-quadratic spline coupling (Neural Spline Flows, Durkan et al. 2019, eq. 4-8 and
    App. A), with linear tails: y1 = x1; each element of x2 inside ``[-bound, bound]`` goes through
    a monotonic rational-quadratic spline of ``bins`` bins whose knots and interior derivatives the
    net computes from x1; outside the bound y2 = x2 (log-det 0).

    Per transformed element the net emits ``3 bins - 1`` values, grouped per channel (as nflows'
    coupling reshapes them): ``bins`` unnormalised widths, ``bins`` unnormalised heights and
    ``bins - 1`` unnormalised interior derivatives. Widths w = min_width + (1 - min_width bins)
    softmax(u_w), scaled to 2 bound (heights likewise); interior derivatives d = min_derivative +
    softplus(u_d + c) with c = log(e^(1 - min_derivative) - 1), so a zero net output (the net's
    zero-initialised last layer) gives uniform bins and d = 1: the coupling starts at the identity.
    The two boundary derivatives are 1 (linear tails). Given the unnormalised parameters (u_d + c
    for the derivatives) the spline equals nflows' ``unconstrained_rational_quadratic_spline`` with
    ``tails="linear"``. The inverse is the closed-form root of the quadratic (App. A), in the
    numerically stable form 2c / (-b - sqrt(b^2 - 4ac)).

    Two arguments reproduce the Neural Spline Flows image code (bayesiains/nsf
    nde/transforms/coupling.py:439-473), a reparameterisation with the same parameter count:
    ``temperature`` T divides the unnormalised widths and heights before the softmax (that code
    divides by the square root of its ResNet's hidden channels), and ``shift_derivatives: false``
    drops the shift c, d = min_derivative + softplus(u_d), as that code and nflows' coupling feed the
    net's output straight to the spline (a zero output then gives interior derivatives
    min_derivative + log 2, not 1, so the coupling does not start at the identity).

    Defaults: 8 bins; bound 3, about 3 standard deviations of actnorm-normalised data (nflows'
    functions default to a tail bound of 1, its coupling to 10 bins); min_width, min_height and
    min_derivative 1e-3 (nflows' DEFAULT_MIN_BIN_WIDTH, _HEIGHT, _DERIVATIVE). Parameters and
    MACs are the net's; the spline's elementwise work is not counted (as affine_coupling's scale and
    shift are not).
    """

    summary = "rational-quadratic spline coupling (Neural Spline Flows), linear tails, closed-form inverse"
    equation = ("Neural Spline Flows (Durkan et al. 2019) eq. 4-8, App. A; nflows "
                "unconstrained_rational_quadratic_spline (tails='linear')")
    shape_rule = SPLIT_APPLIES + ("the net maps the identity part's channels to (3 bins - 1) x the transformed "
                                  "part's channels")

    name = "rq_spline_coupling"

    class Args(_MaskedArgs):
        net: OpCall = Field(description=(
            "the conditioner net that computes the spline parameters from the identity part, e.g. mlp(hidden: 64)"))
        bins: int = Field(default=8, ge=2, description="number K of spline bins (the net emits 3K - 1 values per element)")
        bound: float = Field(default=3.0, gt=0, description=(
            "the spline maps [-bound, bound] onto itself; outside it the coupling is the identity (linear tails)"))
        min_width: float = Field(default=1e-3, gt=0, description="smallest bin width, as a fraction of 2 bound")
        min_height: float = Field(default=1e-3, gt=0, description="smallest bin height, as a fraction of 2 bound")
        min_derivative: float = Field(default=1e-3, gt=0, lt=1, description="smallest derivative at an interior knot")
        temperature: float = Field(default=1.0, gt=0, description=(
            "the net's unnormalised widths and heights are divided by it before the softmax (NSF's image code: "
            "the square root of its net's hidden channels)"))
        shift_derivatives: bool = Field(default=True, description=(
            "true: d = min_derivative + softplus(u + c), a zero net output gives d = 1 (the identity); false: "
            "d = min_derivative + softplus(u), as NSF's and nflows' couplings feed the net's output"))

        @model_validator(mode="after")
        def _fits(self):
            for what in ("min_width", "min_height"):
                if getattr(self, what) * self.bins >= 1:
                    raise ValueError(f"{what} x bins must be below 1 (got {getattr(self, what)} x {self.bins})")
            return self

    def out_per_channel(self, a):
        return 3 * a.bins - 1

    def image(self, a, s):
        """A monotone bijection of R that maps [-bound, bound] onto itself and is the identity
        outside: the output lies in the hull of the input's set and [-bound, bound]."""
        return join(s, Interval(-a.bound, a.bound, True, True))

    def inverse_image(self, a, s):
        return join(s, Interval(-a.bound, a.bound, True, True))

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """What layers/spline.py's autograd graph keeps, per transformed element (measured with
        ``saved_tensors_hooks``, tests/test_spline.py): the three knot / derivative tensors the gathers
        read (3 (K + 1)), the softmaxes' outputs (2K), the softplus input (K - 1) and 19 values of the
        spline's formula and its ``where``s -- 6K + 21 in all -- plus the int64 bin index and the bool
        inside-the-bound mask. With ``shift_derivatives: false`` the softplus reads a view of the net's
        output, which the net counts: K - 1 fewer. x itself is kept only when the net keeps its view x1. A checkerboard
        runs the spline on every element and, as affine_coupling, keeps x * mask (when the net keeps its
        input), the mask and 1 - mask."""
        b, n, k = m.precision.flow, numel(shape), a.bins
        net = m.nets.get("net")
        fixed = 0
        reads_x = net is not None and net.input
        if a.split == "checkerboard":
            e2, own, fixed = n, (n * b if reads_x else 0), 3 * shape[1] * shape[2] * 4
            reads_x = False
        else:
            e2, own = numel(halves(a.split, shape)[1]), 0
        own += e2 * ((6 * k + 21 - (0 if a.shift_derivatives else k - 1)) * b + 8 + 1)
        return Kept(Act(n, b), own=own, input=reads_x, fixed=fixed)
