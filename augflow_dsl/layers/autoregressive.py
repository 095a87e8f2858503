"""Autoregressive flows on vector data: MAF (Papamakarios et al. 2017, eq. 2-5) and IAF (Kingma et
al. 2016), one MADE-conditioned map (affine, or the rational-quadratic spline of :mod:`.spline`)
run in either direction."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..ops import autoregressive as op_defs
from .base import Bijection
from .instantiate import build
from .registry import implements, op_of
from .spline import derivative_shift, rq_spline


class MADE(nn.Module):
    """The MADE (Germain et al. 2015) of the op's description: the dense layers built from it
    (``net``: Linear, ReLU, ..., zero-initialised Linear), each Linear's weight multiplied by its
    fixed 0/1 mask (:func:`~augflow_dsl.ops.autoregressive.made_masks`, a non-persistent buffer:
    deterministic, rebuilt from the arguments) before its product. Output [N, per_dim * D] in
    blocks of D: parameter p of dimension i is unit p * D + i and depends only on the inputs of
    smaller degree."""

    def __init__(self, description, d: int, hidden: int, layers: int, per_dim: int, reverse: bool):
        super().__init__()
        self.net = build(description)
        masks = op_defs.made_masks(d, hidden, layers, per_dim, reverse)
        self.linears = [m for m in self.net if isinstance(m, nn.Linear)]
        for i, mask in enumerate(masks):
            self.register_buffer(f"mask{i}", torch.tensor(mask, dtype=torch.get_default_dtype()), persistent=False)

    def masked_weights(self) -> list[torch.Tensor]:
        return [lin.weight * getattr(self, f"mask{i}").to(lin.weight.dtype) for i, lin in enumerate(self.linears)]

    def forward(self, x: torch.Tensor, weights: list[torch.Tensor] | None = None) -> torch.Tensor:
        """One pass; ``weights``: the masked weights, when the caller makes them once for many passes."""
        weights = self.masked_weights() if weights is None else weights
        it = iter(weights)
        for m in self.net:
            x = F.linear(x, next(it), m.bias) if isinstance(m, nn.Linear) else m(x)
        return x


@implements(op_defs.MAF)
class MAF(Bijection):
    """The autoregressive map of MAF (eq. 3-5) with the transform's parameters theta = MADE(x),
    theta_i a function of x_<i (of x_>i with ``reverse``):

    * ``_density`` (one pass): u = f(x; theta(x)); affine: u = (x - mu) * exp(-alpha),
      log|det du/dx| = -sum alpha (eq. 4-5); rq_spline: u_i = g(x_i; theta_i), log-det sum log g';
    * ``_sample`` (D passes): x = f^-1(u; theta(x)), x built one more dimension per pass (after pass
      k the first k, in degree order, are final); affine: x = u * exp(alpha) + mu, log|det dx/du| =
      +sum alpha.

    ``forward`` (data -> latent) is ``_density`` for maf; :class:`IAF` swaps the two."""

    sequential_forward = False

    def __init__(self, made: MADE, d: int, spline: dict | None = None):
        super().__init__()
        self.made, self.d = made, d
        self.spline = spline  # None (affine) or rq_spline's keywords: bins, bound
        if spline is not None:
            self.shift = derivative_shift(1e-3)

    @classmethod
    def from_op(cls, args, shape, env, nets):
        op = op_of(cls)
        made = MADE(op.describe(args, shape).parts[0][1], shape[0], args.hidden, args.layers,
                    op_defs.per_dim(args), args.reverse)
        spline = None if args.transform == "affine" else {"bins": args.bins, "bound": args.bound}
        return cls(made, shape[0], spline)

    def _transform(self, v, p, inverse: bool):
        """(f(v; p), log|f'| per element), or f^-1 with ``inverse``; p [N, per_dim * D] in blocks of D."""
        if self.spline is None:
            mu, alpha = p.chunk(2, dim=1)
            return ((v * torch.exp(alpha) + mu, alpha) if inverse else ((v - mu) * torch.exp(-alpha), -alpha))
        k = self.spline["bins"]
        uw, uh, ud = p.unflatten(1, (3 * k - 1, self.d)).movedim(1, -1).split([k, k, k - 1], dim=-1)
        return rq_spline(v, uw, uh, ud + self.shift, inverse=inverse, bound=self.spline["bound"])

    def _density(self, x):
        u, ld = self._transform(x, self.made(x), inverse=False)
        return u, ld.sum(1)

    def _sample(self, u):
        weights = self.made.masked_weights()
        x = torch.zeros_like(u)
        for _ in range(self.d):
            x, ld = self._transform(u, self.made(x, weights), inverse=True)
        # the last pass read x with every dimension but the last in degree order final: its parameters,
        # which depend only on those, are the final x's
        return x, ld.sum(1)

    def forward(self, x, cond=None):
        return self._sample(x) if self.sequential_forward else self._density(x)

    def inverse_and_logdet(self, y, cond=None):
        return self._density(y) if self.sequential_forward else self._sample(y)


@implements(op_defs.IAF)
class IAF(MAF):
    """IAF (Kingma et al. 2016) as the inverse of :class:`MAF`: ``forward`` (density, data ->
    latent) is MAF's D-pass map, affine: u_i = x_i * exp(alpha_i) + mu_i with (mu, alpha) functions
    of u_<i, log-det +sum alpha; ``inverse`` (sampling) is MAF's one-pass map, affine:
    x = (u - mu(u)) * exp(-alpha(u))."""

    sequential_forward = True
