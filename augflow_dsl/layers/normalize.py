"""ActNorm (Glow Sec. 3.1; per element as in Flow++ flows.py:328-365)."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import normalize as op_defs
from .base import Bijection, InitOnce
from .registry import implements


@implements(op_defs.ActNorm)
class ActNorm(InitOnce, Bijection):
    """y = x * exp(log s) + b; log|det| = sum of log s over all elements.

    Data-dependent init on the first forward in training mode: b and log s make that batch's
    output zero-mean, unit-variance per channel (or per element); a buffer records that it
    ran, so a reloaded model is not re-initialised.
    """

    def __init__(self, shape: tuple[int, ...], per: str = "channel", split: str = "none", eps: float = 1e-6):
        super().__init__()
        self.per, self.split, self.eps = per, split, eps
        image = len(shape) == 3
        if per == "element":
            pshape = tuple(shape)
        elif split == "columns" and image:
            pshape = (shape[0], 1, 2)  # one set for even columns, one for odd
        else:
            pshape = (shape[0], 1, 1) if image else (shape[0],)
        self.log_scale = nn.Parameter(torch.zeros(pshape))
        self.bias = nn.Parameter(torch.zeros(pshape))
        self.register_buffer("initialized", torch.tensor(False))
        self.image = image

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(shape, args.per, args.split)

    def _expand(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.per != "element" and self.split == "columns" and self.image:
            return p.repeat(1, 1, x.shape[-1] // 2)
        return p

    @torch.no_grad()
    def _init(self, x: torch.Tensor) -> None:
        if self.per == "element":
            mean, std = x.mean(0), x.std(0, unbiased=False)
        elif self.split == "columns" and self.image:
            parts = [x[..., 0::2], x[..., 1::2]]
            mean = torch.stack([p.mean((0, 2, 3)) for p in parts], -1).unsqueeze(1)
            std = torch.stack([p.std((0, 2, 3)) for p in parts], -1).unsqueeze(1)
        else:
            dims = (0, 2, 3) if self.image else (0,)
            mean, std = x.mean(dims), x.std(dims)
            if self.image:
                mean, std = mean.view(-1, 1, 1), std.view(-1, 1, 1)
        std = torch.nan_to_num(std, nan=1.0)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.bias.copy_(-mean * torch.exp(self.log_scale))
        self._mark_initialized()

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        ls = self._expand(self.log_scale, x)
        per_example = ls.expand(x.shape[1:]).sum()
        return per_example.expand(x.shape[0])

    def forward(self, x, cond=None):
        if self._needs_init():
            self._init(x)
        y = x * torch.exp(self._expand(self.log_scale, x)) + self._expand(self.bias, x)
        return y, self._logdet(x)

    def inverse_and_logdet(self, y, cond=None):
        x = (y - self._expand(self.bias, y)) * torch.exp(-self._expand(self.log_scale, y))
        return x, -self._logdet(y)
