"""Spline couplings: monotonic rational-quadratic splines with linear tails (Neural Spline Flows).

:func:`rq_spline` is the spline of Durkan et al. 2019 (eq. 4-8, App. A) written from the paper:
K bins between the knots (x^k, y^k), k = 0..K, with x^0 = y^0 = -B and x^K = y^K = B, and
derivatives d^k at the knots (d^0 = d^K = 1: linear tails). In bin k, with w = x^{k+1} - x^k,
h = y^{k+1} - y^k, s = h / w and xi = (x - x^k) / w in [0, 1]:

    g(x)   = y^k + h [s xi^2 + d^k xi (1 - xi)] / [s + (d^{k+1} + d^k - 2 s) xi (1 - xi)]      (eq. 4)
    g'(x)  = s^2 [d^{k+1} xi^2 + 2 s xi (1 - xi) + d^k (1 - xi)^2] / [s + (...) xi (1 - xi)]^2  (eq. 5)

and the inverse is the root in [0, 1] of the quadratic a xi^2 + b xi + c = 0 (App. A, eq. 6-8):

    a = h (s - d^k) + (y - y^k) q,  b = h d^k - (y - y^k) q,  c = -s (y - y^k),  q = d^{k+1} + d^k - 2 s
    xi = 2c / (-b - sqrt(b^2 - 4 a c))                        (the form without cancellation)

Outside [-B, B] the map is the identity with log-det 0.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..ops import spline as op_defs
from .coupling import _MaskedCoupling
from .registry import implements

__all__ = ["rq_spline", "RQSplineCoupling", "derivative_shift"]


def derivative_shift(min_derivative: float) -> float:
    """c with min_derivative + softplus(c) = 1: a zero unnormalised derivative plus c gives d = 1."""
    return math.log(math.expm1(1.0 - min_derivative))


def _knots(u: torch.Tensor, bound: float, min_size: float) -> torch.Tensor:
    """Knot positions [..., K + 1] from -bound to bound: bin sizes min_size + (1 - K min_size)
    softmax(u) of the interval's length 2 bound, the two ends pinned exactly."""
    k = u.shape[-1]
    frac = min_size + (1 - min_size * k) * torch.softmax(u, dim=-1)
    inner = torch.cumsum(frac, dim=-1)[..., :-1] * (2 * bound) - bound
    return F.pad(F.pad(inner, (1, 0), value=-bound), (0, 1), value=bound)


def rq_spline(x: torch.Tensor, uw: torch.Tensor, uh: torch.Tensor, ud: torch.Tensor, *, inverse: bool = False,
              bound: float = 3.0, min_width: float = 1e-3, min_height: float = 1e-3,
              min_derivative: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """The rational-quadratic spline with linear tails, elementwise: ``(g(x), log g'(x))``, or with
    ``inverse`` ``(g^-1(x), log (g^-1)'(x))``. ``uw``, ``uh`` [..., K] are the unnormalised widths and
    heights, ``ud`` [..., K - 1] the unnormalised interior derivatives (d = min_derivative +
    softplus(ud)), ``...`` the shape of ``x``."""
    inside = (x >= -bound) & (x <= bound)
    xc = torch.where(inside, x, torch.zeros_like(x))  # (clamp's gradient is 0 at the bound itself)
    xk = _knots(uw, bound, min_width)
    yk = _knots(uh, bound, min_height)
    d = F.pad(min_derivative + F.softplus(ud), (1, 1), value=1.0)
    # the bin: how many interior knots lie at or below the value (0 .. K-1)
    edges = (yk if inverse else xk)[..., 1:-1].contiguous()
    idx = torch.searchsorted(edges, xc.unsqueeze(-1), right=True)

    def at(t):
        return t.gather(-1, idx).squeeze(-1)

    x0, y0 = at(xk[..., :-1]), at(yk[..., :-1])
    w, h = at(xk[..., 1:]) - x0, at(yk[..., 1:]) - y0
    d0, d1 = at(d[..., :-1]), at(d[..., 1:])
    s = h / w
    q = d0 + d1 - 2 * s
    if inverse:
        dy = xc - y0
        a = h * (s - d0) + dy * q
        b = h * d0 - dy * q
        c = -s * dy
        disc = (b * b - 4 * a * c).clamp(min=0)
        xi = 2 * c / (-b - torch.sqrt(disc))
        out = x0 + xi * w
    else:
        xi = (xc - x0) / w
    t = xi * (1 - xi)
    den = s + q * t
    if not inverse:
        out = y0 + h * (s * xi * xi + d0 * t) / den
    logd = 2 * torch.log(s) + torch.log(d1 * xi * xi + 2 * s * t + d0 * (1 - xi) ** 2) - 2 * torch.log(den)
    if inverse:
        logd = -logd
    return torch.where(inside, out, x), torch.where(inside, logd, torch.zeros_like(logd))


@implements(op_defs.RQSplineCoupling)
class RQSplineCoupling(_MaskedCoupling):
    """y1 = x1; y2 = g(x2) with g the rational-quadratic spline whose parameters net(x1) gives
    (:func:`rq_spline`), 3K - 1 per element grouped per channel: K widths, K heights, K - 1 interior
    derivatives (each shifted by :func:`derivative_shift`, so a zero net output is the identity).
    ``checkerboard`` masks instead of splitting (RealNVP eq. 9). ``temperature`` divides the widths'
    and heights' logits and ``shift_derivatives=False`` drops the shift, as the NSF image code does
    (bayesiains/nsf nde/transforms/coupling.py:439-473)."""

    def __init__(self, net, how: str = "channels", bins: int = 8, bound: float = 3.0, min_width: float = 1e-3,
                 min_height: float = 1e-3, min_derivative: float = 1e-3, parity: str = "even",
                 temperature: float = 1.0, shift_derivatives: bool = True):
        super().__init__(net, how, parity)
        self.bins, self.bound = bins, bound
        self.min_width, self.min_height, self.min_derivative = min_width, min_height, min_derivative
        self.shift = derivative_shift(min_derivative) if shift_derivatives else 0.0
        self.temperature = temperature

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(nets["net"], args.split, args.bins, args.bound, args.min_width, args.min_height,
                   args.min_derivative, args.parity, args.temperature, args.shift_derivatives)

    def _map(self, v, p, inverse: bool):
        """The spline of ``v`` with the parameters p = net(identity part), and its elementwise log-det."""
        k = self.bins
        uw, uh, ud = p.unflatten(1, (v.shape[1], 3 * k - 1)).movedim(2, -1).split([k, k, k - 1], dim=-1)
        if self.temperature != 1.0:
            uw, uh = uw / self.temperature, uh / self.temperature
        if self.shift:
            ud = ud + self.shift
        return rq_spline(v, uw, uh, ud, inverse=inverse, bound=self.bound, min_width=self.min_width,
                         min_height=self.min_height, min_derivative=self.min_derivative)
