"""The logistic-mixture CDF of Flow++ (Ho et al. 2019, eq. 17-20) and its inverse.

The coupling's inverse solves logit(F(x)) = h per element, F = sum_k w_k sigmoid((x - mu_k) / s_k).
logit(F) is strictly increasing, and the bracket [min_k(mu_k + s_k h), max_k(mu_k + s_k h)]
provably contains the root: at its right end every component's logit is >= h, at its left end
<= h. Two solvers on that bracket:

* :func:`bisect_logit` -- fixed ``mantissa bits + 24`` halvings (float32 47, float64 76), as the
  reference does (logistic.py:134-166 bisects to tol 1e-12);
* :func:`newton_logit` -- safeguarded Newton on logit(F) (Numerical Recipes' rtsafe): the
  bracket is kept and tightened by the sign of the residual at every evaluated point; a Newton
  step is taken when it stays inside the bracket and is at most half the step before last, else
  the step bisects. An element stops once a Newton step is within bisection's own resolution
  (its final half-width, floored at the float resolution eps (|x| + |mu|) of z = (x - mu) / s)
  or its residual is at the float resolution of the computed logit, where the sign bisection
  reads is noise too. logit(F) is nearly linear in the tails (it follows the dominant
  component's (x - mu) / s), so most elements converge in 3-6 evaluations instead of 47 (float32)
  or 76 (float64); mixtures with very narrow components (log-scales near the -7 clamp) take up
  to ~25. Bounded: after ``bisection_steps`` iterations any element still running finishes by
  plain bisection on its current bracket, so the result is never less precise than bisection's.

For export (ONNX, torch.export) the working set that shrinks with the data cannot be traced:
:func:`newton_logit_fixed` runs the same iteration on every element for at most
:data:`EXPORT_ITERATIONS` (32; the hardest mixtures of tests/test_mixture_inverse.py need 22)
iterations, freezing each element once it has converged, so it returns bit for bit the x of
:func:`newton_logit` wherever that converges within the count. While torch.export traces, the
iterations are one ``torch.while_loop`` (an ONNX Loop: one copy of the step in the graph) that
also stops once every element has converged. :func:`newton_logit` switches to it under
:func:`fixed_iterations` or while torch.export traces; the normal path is unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from contextlib import contextmanager

import torch
import torch.nn.functional as F


def mixture_logit_and_logpdf(x: torch.Tensor, logw: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor,
                             inv_scales: torch.Tensor | None = None, pdf: bool = True):
    """log CDF, log(1 - CDF) and (if ``pdf``) log pdf of a logistic mixture at x (components on
    dim 2), from one log-sigmoid: log sigmoid(-z) = log sigmoid(z) - z."""
    inv = torch.exp(-log_scales) if inv_scales is None else inv_scales
    z = (x.unsqueeze(2) - means) * inv
    ls = F.logsigmoid(z)
    a = logw + ls  # log(w sigmoid(z))
    b = a - z  # log(w sigmoid(-z))
    log_cdf = torch.logsumexp(a, 2)
    log_sf = torch.logsumexp(b, 2)
    log_pdf = torch.logsumexp(b + ls - log_scales, 2) if pdf else None
    return log_cdf, log_sf, log_pdf


def bisection_steps(dtype: torch.dtype) -> int:
    """Mantissa bits + 24: float32 47, float64 76 halvings of the bracket."""
    return int(round(-math.log2(torch.finfo(dtype).eps))) + 24


def _bracket(h: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor):
    ends = torch.addcmul(means, torch.exp(log_scales), h.unsqueeze(2))
    return ends.amin(2), ends.amax(2)


@torch.no_grad()
def bisect_logit(h: torch.Tensor, logw: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """x with logit(F(x)) = h by ``bisection_steps`` halvings of the bracket (no host sync)."""
    lo, hi = _bracket(h, means, log_scales)
    inv = torch.exp(-log_scales)
    for _ in range(bisection_steps(h.dtype)):
        mid = (lo + hi) / 2
        log_cdf, log_sf, _ = mixture_logit_and_logpdf(mid, logw, means, log_scales, inv, pdf=False)
        above = (log_cdf - log_sf) > h
        hi = torch.where(above, mid, hi)
        lo = torch.where(above, lo, mid)
    return (lo + hi) / 2


def _bisect_rows(lo, hi, h, lw, inv, nmi):
    """Bisection on [E, K] rows within brackets [lo, hi] (the fallback of :func:`newton_logit`)."""
    for _ in range(bisection_steps(h.dtype)):
        mid = (lo + hi) / 2
        z = torch.addcmul(nmi, mid.unsqueeze(1), inv)
        a = F.logsigmoid(z) + lw
        above = torch.logsumexp(a, 1) - torch.logsumexp(a - z, 1) > h
        hi = torch.where(above, mid, hi)
        lo = torch.where(above, lo, mid)
    return (lo + hi) / 2


@dataclass
class _Rows:
    """A mixture's components as [E, K] rows (components contiguous), one row per element solved."""

    lw: torch.Tensor     # log weights
    lsc: torch.Tensor    # log scales
    inv: torch.Tensor    # 1 / scale
    nmi: torch.Tensor    # -mean / scale
    hf: torch.Tensor     # the target logit, [E]

    def take(self, keep: torch.Tensor) -> "_Rows":
        return _Rows(*(t[keep] for t in (self.lw, self.lsc, self.inv, self.nmi, self.hf)))


def _newton_start(h, logw, means, log_scales):
    """(rows, x, lo, hi, floor, active) of the safeguarded Newton iteration: the bracket of the
    components' own solutions, the start at their mixture-weighted mean (exact for K = 1), and the
    resolution below which no solver can move x."""
    k = logw.shape[2]

    def rows(t: torch.Tensor) -> torch.Tensor:  # [N, C, K, ...] -> [E, K], components contiguous
        return t.movedim(2, -1).reshape(-1, k)

    lw, mu, lsc, hf = rows(logw), rows(means), rows(log_scales), h.reshape(-1)
    ends = torch.addcmul(mu, torch.exp(lsc), hf.unsqueeze(1))
    lo, hi = ends.amin(1), ends.amax(1)
    eps = torch.finfo(h.dtype).eps
    w = torch.exp(lw)
    # float resolution of z = (x - mu) / s is eps (|x| + |mu|) in x: no solver resolves x finer
    floor = torch.maximum((hi - lo) * 2.0 ** -(bisection_steps(h.dtype) + 1), eps * torch.sum(w * mu.abs(), 1))
    x = torch.minimum(torch.maximum(torch.sum(w * ends, 1), lo), hi)
    inv = torch.exp(-lsc)
    active = ~((hi - lo) <= torch.maximum(floor, eps * x.abs()))
    return _Rows(lw, lsc, inv, -mu * inv, hf), x, lo, hi, floor, active


def _newton_step(r: _Rows, x, lo, hi, dx_2, floor):
    """One safeguarded Newton step on logit F(x) = h: (x, lo, hi, |step|, converged, took Newton).
    The bracket shrinks to the side the residual's sign says; the Newton step is taken when it
    stays inside the bracket and is at most half the step before last, else bisection."""
    eps = torch.finfo(x.dtype).eps
    z = torch.addcmul(r.nmi, x.unsqueeze(1), r.inv)
    ls = F.logsigmoid(z)
    a = ls + r.lw  # log(w sigmoid(z))
    b = a - z  # log(w sigmoid(-z))
    log_cdf, log_sf = torch.logsumexp(a, 1), torch.logsumexp(b, 1)
    log_pdf = torch.logsumexp(b + ls - r.lsc, 1)  # log(w s(z) s(-z) / s)
    res = log_cdf - log_sf - r.hf
    above = res > 0
    hi = torch.where(above, x, hi)
    lo = torch.where(above, lo, x)
    step = res * torch.exp(log_cdf + log_sf - log_pdf)  # r / (d logit F / dx)
    xn = x - step
    newton = (xn >= lo) & (xn <= hi) & (2 * step.abs() <= dx_2)
    x = torch.where(newton, xn, (lo + hi) / 2)
    dx = torch.where(newton, step.abs(), (hi - lo) / 2)
    # converged: the step is within bisection's resolution, or the residual is at the float
    # resolution of the computed logit (there the sign that bisection reads is noise too)
    at_floor = res.abs() <= 2 * eps * torch.maximum(log_cdf.abs(), log_sf.abs())
    conv = (dx <= torch.maximum(floor, eps * x.abs())) | (newton & at_floor)
    return x, lo, hi, dx, conv, newton


@torch.no_grad()
def newton_logit(h: torch.Tensor, logw: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor,
                 stats: dict | None = None, max_iter: int | None = None) -> torch.Tensor:
    """x with logit(F(x)) = h by safeguarded Newton (module docstring); components on dim 2.

    Works on the flattened [elements, K] layout and drops converged elements from the working
    set as they finish (most need 3-6 iterations, a few with very narrow components up to ~20).
    Checks for convergence once per iteration (one host sync: cheap on CPU). ``stats``, when
    given, receives the iteration count, the number of Newton (vs bisection) steps and
    ``done_at`` (the iteration at which each element converged). ``max_iter`` (default
    ``bisection_steps``) Newton iterations, then bisection for any element still running.
    Under :func:`fixed_iterations` or torch.export: :func:`newton_logit_fixed` instead."""
    fixed = _FIXED if _FIXED is not None else (EXPORT_ITERATIONS if torch.compiler.is_exporting() else None)
    if fixed is not None:
        return newton_logit_fixed(h, logw, means, log_scales, fixed)
    shape = h.shape
    if h.numel() == 0:
        return h.clone()
    r, x, lo, hi, floor, active = _newton_start(h, logw, means, log_scales)
    out = x.clone()
    dx_2 = dx_1 = hi - lo  # the sizes of the last two steps
    idx = torch.arange(r.hf.numel(), device=h.device)
    max_iter = bisection_steps(h.dtype) if max_iter is None else max_iter
    newton_steps, it = 0, 0
    done_at = torch.zeros(r.hf.numel(), dtype=torch.long, device=h.device) if stats is not None else None
    for it in range(1, max_iter + 1):
        if not bool(active.all()):  # keep only the elements still running
            keep = active.nonzero().squeeze(1)
            idx, x, lo, hi, floor, dx_1, dx_2 = (t[keep] for t in (idx, x, lo, hi, floor, dx_1, dx_2))
            r = r.take(keep)
            if idx.numel() == 0:
                break
        x, lo, hi, dx, conv, newton = _newton_step(r, x, lo, hi, dx_2, floor)
        out[idx] = x
        if stats is not None:
            newton_steps += int(newton.sum())
            done_at[idx[conv]] = it
        active = ~conv
        dx_2, dx_1 = dx_1, dx
    if idx.numel() and bool(active.any()):  # never seen in tests; bisection's guarantee as a fallback
        keep = active.nonzero().squeeze(1)
        out[idx[keep]] = _bisect_rows(lo[keep], hi[keep], r.hf[keep], r.lw[keep], r.inv[keep], r.nmi[keep])
    if stats is not None:
        stats.update(iterations=it, newton_steps=newton_steps, done_at=done_at.view(shape))
    return out.view(shape)


EXPORT_ITERATIONS = 32
_FIXED: int | None = None


@contextmanager
def fixed_iterations(n: int = EXPORT_ITERATIONS):
    """Within, :func:`newton_logit` runs :func:`newton_logit_fixed` with ``n`` iterations."""
    global _FIXED
    before, _FIXED = _FIXED, n
    try:
        yield
    finally:
        _FIXED = before


@torch.no_grad()
def newton_logit_fixed(h: torch.Tensor, logw: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor,
                       iterations: int = EXPORT_ITERATIONS, loop: bool | None = None) -> torch.Tensor:
    """:func:`newton_logit`'s safeguarded Newton for at most ``iterations`` iterations on every
    element, with no data-dependent shapes (exportable): an element's x, bracket and step sizes
    stop changing once it has converged (the same test as :func:`newton_logit`), so it keeps the
    value the adaptive solver returns for it. No bisection fallback: an element not converged
    after ``iterations`` keeps its last iterate (inside its bracket).

    ``loop`` (default: while torch.export traces) runs the iterations as one ``torch.while_loop``
    (an ONNX Loop: one copy of the step in the graph, not ``iterations``), which also stops once
    every element has converged -- the frozen elements would not change, so the result is the
    same; otherwise a Python loop of exactly ``iterations`` steps."""
    shape = h.shape
    r, x, lo, hi, floor, active = _newton_start(h, logw, means, log_scales)

    def step(x, lo, hi, dx_1, dx_2, active):
        x_n, lo_n, hi_n, dx, conv, _ = _newton_step(r, x, lo, hi, dx_2, floor)
        return (torch.where(active, x_n, x), torch.where(active, lo_n, lo), torch.where(active, hi_n, hi),
                torch.where(active, dx, dx_1), torch.where(active, dx_1, dx_2), active & ~conv)

    state = (x, lo, hi, hi - lo, hi - lo, active)  # dx_1, dx_2: the sizes of the last two steps
    if loop if loop is not None else torch.compiler.is_exporting():
        it = torch.zeros((), dtype=torch.int64, device=h.device)
        _, x, *_ = torch.while_loop(lambda i, *s: (i < iterations) & s[-1].any(),
                                    lambda i, *s: (i + 1, *step(*s)), (it, *state))
    else:
        for _ in range(iterations):
            state = step(*state)
        x = state[0]
    return x.view(shape)
