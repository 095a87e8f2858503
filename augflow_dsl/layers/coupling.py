"""Coupling layers: affine (RealNVP eq. 7-8) and logistic-mixture CDF (Flow++ eq. 17-20)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..ops import coupling as op_defs
from .base import Bijection, UsesNets, sum_except_batch
from .mixture import bisection_steps, mixture_logit_and_logpdf, newton_logit  # noqa: F401 (re-exported)
from .splits import checkerboard, merge, split
from .registry import implements


class _Coupling(UsesNets, Bijection):
    def __init__(self, net, how: str):
        super().__init__()
        self.net = net
        self.how = how

    def _params(self, x1, cond):
        return self.run_net(self.net, x1, cond)


@implements(op_defs.AffineCoupling)
class AffineCoupling(_Coupling):
    """y1 = x1; y2 = x2 * exp(log s) + t with (log s, t) from net(x1) (RealNVP eq. 7-8).

    log s = 2 tanh(r/2) (``tanh2``, DenseFlow affine_coupling.py), log sigmoid(r + 2) (``sigmoid``,
    Glow) or r (``exp``). ``checkerboard`` masks instead of splitting (RealNVP eq. 9).
    """

    def __init__(self, net, how: str = "channels", scale: str = "tanh2", layout: str = "interleaved"):
        super().__init__(net, how)
        self.scale, self.layout = scale, layout

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(nets["net"], args.split, args.scale, args.layout)

    def _st(self, p):
        # unbind / chunk: one backward pass (stack / cat), not a zero-filled copy per slice
        if self.layout == "interleaved":
            raw, t = p.unflatten(1, (-1, 2)).unbind(2)
        else:
            raw, t = p.chunk(2, dim=1)
        if self.scale == "tanh2":
            logs = 2 * torch.tanh(raw / 2)
        elif self.scale == "sigmoid":
            logs = F.logsigmoid(raw + 2)
        else:
            logs = raw
        return logs, t

    def forward(self, x, cond=None):
        if self.how == "checkerboard":
            m = checkerboard(x.shape[-2], x.shape[-1], x)
            logs, t = self._st(self._params(x * m, cond))
            y = x * m + (1 - m) * (x * torch.exp(logs) + t)
            return y, sum_except_batch((1 - m) * logs)
        x1, x2 = split(x, self.how)
        logs, t = self._st(self._params(x1, cond))
        return merge(x1, x2 * torch.exp(logs) + t, self.how), sum_except_batch(logs)

    def inverse_and_logdet(self, y, cond=None):
        if self.how == "checkerboard":
            m = checkerboard(y.shape[-2], y.shape[-1], y)
            logs, t = self._st(self._params(y * m, cond))
            x = y * m + (1 - m) * (y - t) * torch.exp(-logs)
            return x, -sum_except_batch((1 - m) * logs)
        y1, y2 = split(y, self.how)
        logs, t = self._st(self._params(y1, cond))
        return merge(y1, (y2 - t) * torch.exp(-logs), self.how), -sum_except_batch(logs)


def _mixture(p: torch.Tensor, c: int, k: int):
    """Net output [N, c(2+3K), ...] grouped per channel (flows.py:500-503) -> parts."""
    a, b, logits, means, log_scales = p.unflatten(1, (c, 2 + 3 * k)).split([1, 1, k, k, k], dim=2)
    return (torch.tanh(a.squeeze(2)), b.squeeze(2), torch.log_softmax(logits, 2), means,
            log_scales.clamp(min=-7.0))


@implements(op_defs.MixtureCoupling)
class MixtureCoupling(_Coupling):
    """Flow++ coupling (eq. 17-20): y2 = logit(F(x2)) * exp(a) + b, F a K-component logistic
    mixture CDF, a = tanh(raw a), log-scales clamped at -7. ``smooth``: VFlow's
    logit(0.9 F + 0.05) (flows.py:279-297). log|det| = sum[log f(x2) - log F - log(1 - F)] + a
    (+ log 0.9 - log c' - log(1 - c') terms for smooth).

    The inverse solves logit(F(x2)) = h by safeguarded Newton on the provable bracket
    [min_k(mu_k + s_k h), max_k(mu_k + s_k h)] (:func:`.mixture.newton_logit`): bisection's
    precision in 3-6 evaluations for most elements instead of its 47 (float32) / 76 (float64)
    halvings (:func:`.mixture.bisect_logit`, kept as the reference in the tests).
    """

    def __init__(self, net, how: str = "channels", components: int = 32, logit: str = "exact"):
        super().__init__(net, how)
        self.k, self.logit = components, logit

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(nets["net"], args.split, args.components, args.logit)

    def _h_and_ld(self, x2, logw, means, log_scales):
        log_cdf, log_sf, log_pdf = mixture_logit_and_logpdf(x2, logw, means, log_scales)
        if self.logit == "exact":
            return log_cdf - log_sf, log_pdf - log_cdf - log_sf
        c = 0.9 * torch.exp(log_cdf) + 0.05
        log_c, log_1mc = torch.log(c), torch.log1p(-c)  # each once, for h and the log-det
        return log_c - log_1mc, log_pdf + math.log(0.9) - log_c - log_1mc

    def forward(self, x, cond=None):
        x1, x2 = split(x, self.how)
        a, b, logw, means, log_scales = _mixture(self._params(x1, cond), x2.shape[1], self.k)
        h, ld = self._h_and_ld(x2, logw, means, log_scales)
        y2 = h * torch.exp(a) + b
        return merge(x1, y2, self.how), sum_except_batch(ld + a)

    def _solve(self, y, cond):
        """(y1, x2, mixture parts): the inverse's x2 from y2 = logit(F(x2)) exp(a) + b."""
        y1, y2 = split(y, self.how)
        a, b, logw, means, log_scales = _mixture(self._params(y1, cond), y2.shape[1], self.k)
        h = (y2 - b) * torch.exp(-a)
        if self.logit == "smooth":
            # logit(0.05 + 0.9 F) only reaches sigmoid(h) in (0.05, 0.95): outside it no x2 exists.
            # We clamp F into (0, 1) (x2 near the mixture's outermost quantile); the authors' code
            # (flows.py:279-297 + logistic.py:134-166) clips F to 1 and its bisection runs to the edge
            # of its bracket, max_k(mu_k + 200 sum_j s_j). Decoding differs only at such elements
            # (docs/import-verification.md).
            c = torch.sigmoid(h)
            cdf = ((c - 0.05) / 0.9).clamp(torch.finfo(h.dtype).tiny, 1 - torch.finfo(h.dtype).eps)
            h = torch.log(cdf) - torch.log1p(-cdf)
        return y1, newton_logit(h, logw, means, log_scales), (a, logw, means, log_scales)

    def inverse(self, y, context=None):
        """The inverse alone (sampling): no log-det, so no second evaluation of the mixture."""
        y1, x2, _ = self._solve(y, context)
        return merge(y1, x2, self.how)

    def inverse_and_logdet(self, y, cond=None):
        y1, x2, (a, logw, means, log_scales) = self._solve(y, cond)
        _, ld = self._h_and_ld(x2, logw, means, log_scales)
        return merge(y1, x2, self.how), -sum_except_batch(ld + a)
