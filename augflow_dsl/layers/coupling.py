"""Coupling layers: affine (RealNVP eq. 7-8), additive (NICE eq. 6) and logistic-mixture CDF (Flow++ eq. 17-20)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..ops import coupling as op_defs
from .base import Bijection, UsesNets, sum_except_batch, zeros_like_batch
from .condition import ReadsCondition
from .mixture import bisection_steps, mixture_logit_and_logpdf, newton_logit  # noqa: F401 (re-exported)
from .splits import checkerboard, merge, split
from .registry import implements


class _Coupling(ReadsCondition, UsesNets, Bijection):
    """A coupling's net reads x1 and its context: a q-network's context (``cond``), then, with
    ``condition: true``, the model's condition y (embedded, broadcast over x1's positions)."""

    def __init__(self, net, how: str):
        super().__init__()
        self.net = net
        self.how = how

    def _params(self, x1, cond):
        if self.reads_condition:
            y = self.condition_channels(x1)
            cond = y if cond is None else torch.cat([cond, y], 1)
        return self.run_net(self.net, x1, cond)


class _MaskedCoupling(_Coupling):
    """A coupling that splits x (channels, columns) or masks it (a checkerboard keeping the squares of
    ``parity``, i + j even or odd: RealNVP eq. 9); ``_map`` transforms the second part."""

    def __init__(self, net, how: str = "channels", parity: str = "even"):
        super().__init__(net, how)
        self.parity = parity

    def _map(self, x2, p, inverse: bool):
        """(the transformed part, its elementwise log-det or None for 0) from the net's output p."""
        raise NotImplementedError

    def _couple(self, x, cond, inverse: bool):
        if self.how == "checkerboard":
            m = checkerboard(x.shape[-2], x.shape[-1], x, self.parity)
            y2, ld = self._map(x, self._params(x * m, cond), inverse)
            return x * m + (1 - m) * y2, zeros_like_batch(x) if ld is None else sum_except_batch((1 - m) * ld)
        x1, x2 = split(x, self.how)
        y2, ld = self._map(x2, self._params(x1, cond), inverse)
        return merge(x1, y2, self.how), zeros_like_batch(x) if ld is None else sum_except_batch(ld)

    def forward(self, x, cond=None):
        return self._couple(x, cond, False)

    def inverse_and_logdet(self, y, cond=None):
        return self._couple(y, cond, True)


@implements(op_defs.AffineCoupling)
class AffineCoupling(_MaskedCoupling):
    """y1 = x1; y2 = x2 * s + t with (log s, t) from net(x1) (RealNVP eq. 7-8), or (x2 - t) * s
    (``shift_then_scale``, normflows).

    With u = r + offset: log s = 2 tanh(u/2) (``tanh2``, DenseFlow affine_coupling.py), log sigmoid(u)
    (``sigmoid``, Glow; offset 2 unless given), u (``exp``) or clamp 0.636 atan(u) (``softclamp``,
    FrEIA); s = exp(log s) + eps (nflows' floor) when eps > 0.
    """

    def __init__(self, net, how: str = "channels", scale: str = "tanh2", layout: str = "interleaved",
                 parity: str = "even", first: str = "scale", offset: float = 0.0, eps: float = 0.0,
                 clamp: float = 2.0, order: str = "scale_then_shift"):
        super().__init__(net, how, parity)
        self.scale, self.layout, self.first, self.order = scale, layout, first, order
        self.offset, self.eps, self.clamp = offset, eps, clamp

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(nets["net"], args.split, args.scale, args.layout, args.parity, args.first,
                   op_defs.AffineCoupling.offset(args), args.eps, args.clamp, args.order)

    def _st(self, p):
        """(log s, s, t) from the net's output."""
        # unbind / chunk: one backward pass (stack / cat), not a zero-filled copy per slice
        pair = p.unflatten(1, (-1, 2)).unbind(2) if self.layout == "interleaved" else p.chunk(2, dim=1)
        raw, t = pair if self.first == "scale" else pair[::-1]
        if self.offset:
            raw = raw + self.offset
        if self.scale == "tanh2":
            logs = 2 * torch.tanh(raw / 2)
        elif self.scale == "sigmoid":
            logs = F.logsigmoid(raw)
        elif self.scale == "softclamp":
            logs = self.clamp * 0.636 * torch.atan(raw)
        else:
            logs = raw
        s = torch.exp(logs)
        if self.eps:
            s = s + self.eps
            logs = torch.log(s)
        return logs, s, t

    def _map(self, x2, p, inverse):
        logs, s, t = self._st(p)
        first = self.order == "scale_then_shift"
        if not inverse:
            return (x2 * s + t if first else (x2 - t) * s), logs
        s_inv = torch.exp(-logs) if not self.eps else 1 / s
        return ((x2 - t) * s_inv if first else x2 * s_inv + t), -logs


@implements(op_defs.AdditiveCoupling)
class AdditiveCoupling(_MaskedCoupling):
    """y1 = x1; y2 = x2 + t(x1), log-det 0 (NICE eq. 6); inverse x2 = y2 - t(y1)."""

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(nets["net"], args.split, args.parity)

    def _map(self, x2, p, inverse):
        return (x2 - p if inverse else x2 + p), None


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
