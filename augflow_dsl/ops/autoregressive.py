"""Autoregressive flows for vector data: MAF (Papamakarios et al. 2017) and IAF (Kingma et al. 2016),
both an affine autoregressive transform whose parameters come from a MADE (Germain et al. 2015).

The MADE is described here once (``describe``: dense ``Linear`` layers, ReLU between them, the
output layer zero-initialised); the layer (:mod:`augflow_dsl.layers.autoregressive`) multiplies each
weight by a fixed 0/1 mask (:func:`made_degrees`, :func:`made_masks`) before the product. The
masked-out weights are still ``nn.Parameter`` entries (their gradient is always zero), so the
parameter count is that of the dense layers and ``numel()`` meets it; the MACs are those of the
dense matrix products that actually run (a masked product is a dense one).

Directions (our ``forward`` is data -> latent, the density direction):

* ``maf``: density one MADE pass, sampling D sequential passes;
* ``iaf``: the inverse of ``maf``'s map: sampling one pass, density D sequential passes.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .net_descriptions import Act, Activation, Kept, Linear, Net, Precision, Sequential, chain
from .registry import BIJECTION, MemoryIn, Op, OpArgs, OpShapeError, register
from .regions import Region
from .supports import REAL, Interval, join


def per_dim(a) -> int:
    """Values the MADE emits per dimension: affine 2 (mu, alpha); rq_spline 3 bins - 1 (bins widths,
    bins heights, bins - 1 interior derivatives, as rq_spline_coupling's net)."""
    return 2 if a.transform == "affine" else 3 * a.bins - 1


def made_degrees(d: int, hidden: int, layers: int, reverse: bool = False) -> list[list[int]]:
    """The MADE degrees, input first, then each hidden layer (Germain et al. 2015 Sec. 4): the
    inputs 1..D in natural order (D..1 with ``reverse``); hidden units cycle 1..D-1 in order, as the
    MAF code's ``create_degrees(..., mode='sequential')`` does (``arange(H) % max(1, D-1) +
    min(1, D-1)``; all 0 for D = 1: such units read no input). Deterministic: no random degrees."""
    inputs = list(range(d, 0, -1)) if reverse else list(range(1, d + 1))
    h = [k % max(1, d - 1) + min(1, d - 1) for k in range(hidden)]
    return [inputs] + [h] * layers


def made_masks(d: int, hidden: int, layers: int, per_dim: int, reverse: bool = False) -> list[list[list[int]]]:
    """The 0/1 masks [out, in] of the MADE's linear layers (MAF code, made.py ``create_masks``):
    hidden unit k reads unit j of the layer below when m(j) <= m(k); output unit p * D + i (the
    p-th parameter of dimension i) reads hidden unit k when m(k) < m_in(i), so parameter i depends
    only on the inputs of smaller degree (x_<i in natural order)."""
    deg = made_degrees(d, hidden, layers, reverse)
    masks = [[[int(lo <= hi) for lo in below] for hi in above] for below, above in zip(deg[:-1], deg[1:])]
    out = [m for _ in range(per_dim) for m in deg[0]]
    masks.append([[int(k < m) for k in deg[-1]] for m in out])
    return masks


@register
class MAF(Op):
    """Masked autoregressive flow (Papamakarios et al. 2017, eq. 2-5) on vector data [D]:
    (mu, alpha) = MADE(x) with mu_i, alpha_i functions of x_<i only (input degrees 1..D, or D..1
    with ``reverse``). Density direction (``forward``, data -> latent), one MADE pass:
    u_i = (x_i - mu_i) * exp(-alpha_i) (eq. 4), log|det du/dx| = -sum_i alpha_i (eq. 5); alpha
    is the raw MADE output (no squashing, as in the paper). Sampling (``inverse``),
    x_i = u_i * exp(alpha_i) + mu_i (eq. 3), takes D sequential MADE passes: pass k fixes x_k.
    The MADE's output is laid out in blocks of D: with ``affine`` units [0, D) are mu, [D, 2D)
    alpha. ``transform: rq_spline``: u_i = g(x_i; theta_i(x_<i)), g the rational-quadratic spline
    with linear tails of ``rq_spline_coupling`` (Neural Spline Flows eq. 4-8; identity outside
    [-bound, bound]), theta_i its 3 bins - 1 unnormalised widths, heights and interior derivatives
    (block p of the output is value p of every dimension); log-det sum_i log g'(x_i); sampling
    inverts g in closed form, again D passes. The output layer starts at zero, so the flow starts
    at the identity (the spline: uniform bins, unit derivatives).

    Regions (the audit): every element is transformed (``unchanged`` is None), the first one by
    a function of nothing but the biases; the MADE reads all of x (``reads`` is the whole input),
    each output only through its mask, which the region algebra cannot express: the
    autoregressive ordering is the masks' (tests/test_autoregressive.py checks the Jacobian)."""

    summary = "masked autoregressive flow (MADE-conditioned affine or spline), vector data; sampling is D passes"
    equation = ("MAF (Papamakarios et al. 2017) eq. 2-5; MADE (Germain et al. 2015) masks; hidden degrees as "
                "the MAF code's create_degrees('sequential'); rq_spline: Neural Spline Flows (Durkan et al. 2019) "
                "eq. 4-8")
    shape_rule = ("vector data [D] only, no context, shape unchanged; MADE: D -> hidden -> ... -> 2D (affine) or "
                  "(3 bins - 1) D (rq_spline); MACs per example: one MADE pass (density); sampling is D passes")

    name = "maf"
    role = BIJECTION
    sequential_forward = False  # forward (density) is one pass; the inverse is D passes

    class Args(OpArgs):
        hidden: int = Field(gt=0, description="units per hidden layer of the MADE")
        layers: int = Field(default=2, gt=0, description="number of hidden layers of the MADE")
        transform: Literal["affine", "rq_spline"] = Field(default="affine", description=(
            "the per-dimension transform the MADE parameterises: affine (mu, alpha: 2 values per dimension) or "
            "rq_spline (rq_spline_coupling's spline with linear tails: 3 bins - 1 values per dimension)"))
        reverse: bool = Field(default=False, description=(
            "input degrees D..1 instead of 1..D: dimension i is conditioned on x_>i (alternate it between "
            "stacked layers)"))
        bins: int = Field(default=8, ge=2, lt=1000, description=(
            "rq_spline only: number K of spline bins (the MADE emits 3K - 1 values per dimension)"))
        bound: float = Field(default=3.0, gt=0, description=(
            "rq_spline only: the spline maps [-bound, bound] onto itself; outside it the transform is the identity"))

    def _dim(self, shape) -> int:
        if len(shape) != 1:
            raise OpShapeError(f"{self.name} is for vector data [D]; got a {'x'.join(map(str, shape))} tensor "
                               "(use a coupling for images)")
        return shape[0]

    def out_shape(self, a, shape, env):
        self._dim(shape)
        if env.context is not None:
            raise OpShapeError(f"{self.name} reads no context (its MADE conditions on x alone)")
        return shape

    def describe(self, a, shape):
        """The dense MADE: Linear D -> hidden, ReLU, (Linear hidden -> hidden, ReLU) x (layers - 1),
        zero-initialised Linear hidden -> per_dim * D (the layer masks each weight)."""
        d = self._dim(shape)
        parts, c = [], d
        for _ in range(a.layers):
            parts += [Linear(c, a.hidden), Activation()]
            c = a.hidden
        return Net((("made", Sequential((*parts, Linear(c, per_dim(a) * d, init="zero")))),))

    def passes(self, a, shape) -> int:
        """MADE passes in the density direction (``forward``)."""
        return self._dim(shape) if self.sequential_forward else 1

    def params(self, a, shape, env):
        """The dense layers' weights and biases: masked-out weights are parameters too (always zero
        gradient)."""
        return self.describe(a, shape).params()

    def macs(self, a, shape, env):
        """Per example, density direction: the MADE's dense products times its passes (maf 1, iaf D)."""
        return self.passes(a, shape) * self.describe(a, shape).macs()

    def reads(self, a, shape):
        """The MADE reads the whole input, each output through its mask."""
        return Region.whole(shape)

    def unchanged(self, a, shape):
        """None: every element is transformed (x_1 by a shift and scale from the biases alone)."""
        return None

    def mixes(self, a, shape):
        """Every feature but the first in degree order (0, or D - 1 with ``reverse``) is a function of
        the features before it (graph/coverage_audit.py; the MADE is no graph node)."""
        d = self._dim(shape)
        return None if d < 2 else Region((0, d - 1)) if a.reverse else Region((1, d))

    def image(self, a, s):
        """affine: R -> R (a finite scale per element); rq_spline: the hull of the input's set and
        [-bound, bound] (a monotone map of [-bound, bound] onto itself, the identity outside)."""
        return REAL if a.transform == "affine" else join(s, Interval(-a.bound, a.bound, True, True))

    def inverse_image(self, a, s):
        return self.image(a, s)

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """The MADE runs in the flow's precision (no autocast). Per MADE pass: its layers' chain on a
        D-vector (each Linear keeps its input, each ReLU its output) and the transform's tensors.
        affine: two D-vectors: maf's density pass keeps x - mu and exp(-alpha) (their product keeps
        both); each of iaf's D passes keeps the new x it reads and exp(alpha) (u, the op's input, is
        kept by the product). rq_spline: rq_spline_coupling's rule per element, (6 bins + 21) values
        plus the int64 bin index and the bool mask for the forward spline (maf's density pass), 6 values
        more for the inverse (iaf's passes: a, b, c, the discriminant and its root), plus, for iaf, the
        new x each pass reads. Per batch: each mask (kept by W * mask) and each masked weight (made
        once per call, kept by its product; all but the first layer's when the op's input needs no
        gradient, which the rule ignores). Measured with ``saved_tensors_hooks``
        (tests/test_autoregressive.py)."""
        b, d = m.precision.flow, self._dim(shape)
        p = Precision(flow=b, net=b, wide=b)
        made = self.describe(a, shape).parts[0][1]
        k = chain(Act(d, b), [made], p)
        weights = sum(lin.c_in * lin.c_out for _, lin in made.leaves() if isinstance(lin, Linear))
        if a.transform == "affine":
            per_pass = 2 * d * b
        else:
            values = 6 * a.bins + 21 + (6 + 1 if self.sequential_forward else 0)
            per_pass = d * (values * b + 8 + 1)
        return Kept(Act(d, b), own=self.passes(a, shape) * (k.own + per_pass), input=True, fixed=2 * weights * b)


@register
class IAF(MAF):
    """Inverse autoregressive flow (Kingma et al. 2016, eq. 10-11): the inverse of ``maf``'s map,
    the MADE reading the latent side. Sampling (``inverse``, latent u -> data x), one MADE pass:
    (mu, alpha) = MADE(u), x_i = (u_i - mu_i) * exp(-alpha_i), log|det dx/du| = -sum alpha_i.
    Density (``forward``, data -> latent), D sequential MADE passes: u_i = x_i * exp(alpha_i) +
    mu_i with alpha_i, mu_i functions of u_<i, log|det du/dx| = +sum_i alpha_i. (Kingma's
    z = sigma * eps + mu is this with sigma = exp(-alpha), mu -> -mu exp(-alpha).) With
    ``transform: rq_spline``: sampling x_i = g(u_i; theta_i(u_<i)) in one pass, density
    u_i = g^-1(x_i; theta_i(u_<i)) in D passes. Arguments, parameters, regions and init (the
    identity) are ``maf``'s."""

    summary = "inverse autoregressive flow (maf's inverse), vector data; density evaluation is D passes"
    equation = "IAF (Kingma et al. 2016) eq. 10-11, as the inverse of MAF (Papamakarios et al. 2017) eq. 3-5"
    shape_rule = ("vector data [D] only, no context, shape unchanged; MADE: D -> hidden -> ... -> 2D (affine) or "
                  "(3 bins - 1) D (rq_spline); MACs per example: D MADE passes (density); sampling is one pass")

    name = "iaf"
    sequential_forward = True


__all__ = ["MAF", "IAF", "made_degrees", "made_masks", "per_dim"]
