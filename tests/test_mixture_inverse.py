"""The mixture coupling's inverse: safeguarded Newton against the bisection it replaced.

Well-conditioned mixtures: Newton's x equals bisection's to within a few times bisection's own
resolution (its final half-width, floored at the float resolution of z = (x - mu) / s). Hard
mixtures (log-scales down to the -7 clamp, far tails, 32 spread components): its residual
logit F(x) - h, evaluated in float64, is no larger than bisection's. Both dtypes; iterations
stay far below the bound.
"""
from __future__ import annotations

import pytest
import torch

from augflow_dsl.layers.mixture import bisect_logit, bisection_steps, mixture_logit_and_logpdf, newton_logit

SHAPE = (2, 3, 8, 8)


def _mixture(k: int, spread: float, log_scale_range: tuple[float, float], h_scale: float, dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    n, c, hh, ww = SHAPE
    full = (n, c, k, hh, ww)
    logw = torch.log_softmax(torch.randn(full, generator=g, dtype=dtype) * 3, 2)
    means = torch.randn(full, generator=g, dtype=dtype) * spread
    lo, hi = log_scale_range
    log_scales = torch.rand(full, generator=g, dtype=dtype) * (hi - lo) + lo
    h = torch.randn(SHAPE, generator=g, dtype=dtype) * h_scale
    return h, logw, means, log_scales


def _residual(x, h, logw, means, log_scales) -> torch.Tensor:
    d = [t.double() for t in (x, logw, means, log_scales)]
    log_cdf, log_sf, _ = mixture_logit_and_logpdf(*d, pdf=False)
    return (log_cdf - log_sf - h.double()).abs()


def _slope(x, logw, means, log_scales):
    log_cdf, log_sf, log_pdf = mixture_logit_and_logpdf(*(t.double() for t in (x, logw, means, log_scales)))
    return log_cdf, log_sf, torch.exp(log_pdf - log_cdf - log_sf)


def _resolution(x, h, logw, means, log_scales) -> torch.Tensor:
    """Bisection's resolution in x: its final half-width, or the float resolution of what it
    compares -- z = (x - mu) / s (eps (|x| + |mu|)) and the computed logit (eps |log F| / slope)
    -- whichever is larger."""
    ends = means + torch.exp(log_scales) * h.unsqueeze(2)
    width = ends.amax(2) - ends.amin(2)
    eps = torch.finfo(x.dtype).eps
    log_cdf, log_sf, log_pdf = mixture_logit_and_logpdf(x, logw, means, log_scales)
    logit_noise = eps * torch.maximum(log_cdf.abs(), log_sf.abs()).clamp(min=1) * torch.exp(log_cdf + log_sf - log_pdf)
    return torch.maximum(width * 2.0 ** -(bisection_steps(x.dtype) + 1),
                         eps * (x.abs() + means.abs().amax(2)) + logit_noise)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k,h_scale", [(32, 3.0), (32, 30.0), (3, 3.0)])
def test_newton_equals_bisection_when_well_conditioned(dtype, k, h_scale):
    h, logw, means, log_scales = _mixture(k, 2.0, (-2.0, 1.0), h_scale, dtype, seed=k)
    stats: dict = {}
    x_newton = newton_logit(h, logw, means, log_scales, stats)
    x_bisect = bisect_logit(h, logw, means, log_scales)
    gap = (x_newton - x_bisect).abs() / _resolution(x_bisect, h, logw, means, log_scales)
    assert gap.max() <= 8, gap.max()
    assert stats["iterations"] <= 16 and stats["done_at"].double().mean() <= 6, stats["iterations"]
    assert stats["newton_steps"] > 2 * h.numel(), "the steps taken were mostly bisections"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("spread,h_scale", [(2.0, 3.0), (10.0, 10.0), (2.0, 60.0), (0.01, 3.0)])
def test_newton_as_precise_as_bisection_on_hard_mixtures(dtype, spread, h_scale):
    """Narrow components (log-scale -7) make logit F nearly a step function in places and far
    tails make F or 1 - F tiny: element by element, the residual (float64) of Newton's x
    exceeds that of bisection's by at most a few units of the float resolution there."""
    h, logw, means, log_scales = _mixture(32, spread, (-7.0, 2.0), h_scale, dtype, seed=int(spread * 10 + h_scale))
    if dtype == torch.float32:
        h = h.clamp(-80, 80)  # beyond, F itself is below float32's range
    stats: dict = {}
    x_newton, x_bisect = newton_logit(h, logw, means, log_scales, stats), bisect_logit(h, logw, means, log_scales)
    r_newton = _residual(x_newton, h, logw, means, log_scales)
    r_bisect = _residual(x_bisect, h, logw, means, log_scales)
    # the float resolution of the residual at bisection's answer: its x resolution times the slope
    _, _, slope = _slope(x_bisect, logw, means, log_scales)
    floor = _resolution(x_bisect, h, logw, means, log_scales) * slope
    excess = (r_newton - r_bisect) / floor
    assert excess.max() <= 8, excess.max()
    assert stats["iterations"] <= 30 < bisection_steps(dtype)
    assert stats["done_at"].double().mean() <= 10


def test_one_component_is_exact_at_once():
    h, logw, means, log_scales = _mixture(1, 1.0, (-2.0, 1.0), 5.0, torch.float64, seed=0)
    stats: dict = {}
    x = newton_logit(h, logw, means, log_scales, stats)
    assert torch.allclose(x, means[:, :, 0] + torch.exp(log_scales[:, :, 0]) * h, rtol=1e-14, atol=1e-14)
    assert stats["iterations"] <= 1


def test_identical_components_and_empty_input():
    """A zero-initialised net gives K identical components: the bracket is a point."""
    k = 4
    h = torch.randn(SHAPE)
    zeros = torch.zeros(SHAPE[0], SHAPE[1], k, *SHAPE[2:])
    assert torch.equal(newton_logit(h, torch.log_softmax(zeros, 2), zeros, zeros), h)
    empty = torch.zeros(0, 3, 4, 4)
    assert newton_logit(empty, torch.zeros(0, 3, k, 4, 4), torch.zeros(0, 3, k, 4, 4),
                        torch.zeros(0, 3, k, 4, 4)).shape == empty.shape


def test_fallback_bisection_keeps_the_precision():
    """With Newton cut off after one iteration, the elements still running finish by bisection
    on their bracket: the result is bisection's to its resolution."""
    h, logw, means, log_scales = _mixture(32, 2.0, (-2.0, 1.0), 3.0, torch.float64, seed=3)
    x_bisect = bisect_logit(h, logw, means, log_scales)
    stats: dict = {}
    x = newton_logit(h, logw, means, log_scales, stats, max_iter=1)
    assert stats["iterations"] == 1 and (stats["done_at"] == 0).any()
    assert ((x - x_bisect).abs() / _resolution(x_bisect, h, logw, means, log_scales)).max() <= 8
