"""Context nets of q-networks (the ``context`` ops of :mod:`augflow_dsl.ops.contexts`).

Built by ``from_op(args, in_shape, bits)`` from the op's description (``op.describe(args,
in_shape)``, :mod:`augflow_dsl.ops.net_descriptions`); ``forward(x)`` reads the conditioning data once
and returns the context every coupling of the q-network reads. Parameter and MAC counts are
the description's (see tests/test_nets.py).
"""
from __future__ import annotations

import torch

from ..ops import net_descriptions as nl
from ..ops import contexts as op_defs
from .base import ContextModule
from .instantiate import build_children
from .registry import implements, op_of

__all__ = ["GatedContext", "DenseContext", "DataContext"]


def _need_bits(bits, name: str) -> int:
    if bits is None:
        raise ValueError(f"{name} scales integer data and needs its bit depth; got bits=None")
    return int(bits)


@implements(op_defs.GatedContext)
class GatedContext(ContextModule):
    """Flow++ context net of r(u|x) (Ho et al. 2019, Sec. 3.4; run_cifar.py:25-31): scale
    (``centered``: x / 2^bits - 0.5; ``raw``: as given), even/odd columns concatenated on
    channels (2C x H x W/2), 3x3 conv 2C -> F, ``blocks`` gated convs with a 3x3 second conv.
    Output [N, F, H, W/2]."""

    def __init__(self, d: nl.Net, input: str = "centered", bits: int | None = None):
        super().__init__()
        self.input = input
        self.scale = 2.0 ** _need_bits(bits, "gated_context (input: centered)") if input == "centered" else None
        build_children(self, d)

    @classmethod
    def from_op(cls, args, in_shape, bits):
        c, h, w = in_shape
        if w % 2:
            raise ValueError(f"gated_context splits columns: width {w} is odd")
        return cls(op_of(cls).describe(args, in_shape), args.input, bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            x = x / self.scale - 0.5
        x = torch.cat([x[..., 0::2], x[..., 1::2]], dim=1)
        h = self.proj(x)
        for block in self.blocks:
            h = block(h)
        return h


@implements(op_defs.DenseContext)
class DenseContext(ContextModule):
    """DenseFlow context net of the dequantizer (Grcic et al. 2021, App. B; dequantization.py:
    46-61): 2x/(2^bits - 1) - 1, dense block C -> F at H x W, 2x2 stride-2 conv F -> F, dense
    block F -> F at H/2 x W/2 (both gated, no activation between). Output [N, F, H/2, W/2]."""

    def __init__(self, d: nl.Net, bits: int = 8):
        super().__init__()
        self.max = 2.0 ** bits - 1
        build_children(self, d)

    @classmethod
    def from_op(cls, args, in_shape, bits):
        c, h, w = in_shape
        if h % 2 or w % 2:
            raise ValueError(f"dense_context downsamples by 2: {h}x{w} has an odd side")
        op = op_of(cls)
        return cls(op.describe(args, in_shape), _need_bits(bits, op.name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(2 * x / self.max - 1)


@implements(op_defs.DataContext)
class DataContext(ContextModule):
    """The conditioning data itself as the context (no parameters)."""

    @classmethod
    def from_op(cls, args, in_shape, bits):
        return cls()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
