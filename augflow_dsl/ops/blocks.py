"""Parameter and MAC formulas of building blocks shared by several nets (pure Python)."""
from __future__ import annotations

from .registry import conv_macs, conv_params


def dense_block_params(c0: int, depth: int, growth: int, out: int) -> int:
    """DenseFlow dense block (denseblock.py:6-64): ``depth`` layers of [1x1 c->c, ReLU,
    3x3 c->growth, ReLU, concat], then a gated 1x1 conv (c0 + depth*growth) -> 3*out,
    output a + b*sigmoid(c)."""
    total = 0
    for i in range(depth):
        c = c0 + i * growth
        total += conv_params(1, c, c) + conv_params(3, c, growth)
    return total + conv_params(1, c0 + depth * growth, 3 * out)


def dense_block_macs(c0: int, depth: int, growth: int, out: int, positions: int) -> int:
    total = 0
    for i in range(depth):
        c = c0 + i * growth
        total += conv_macs(1, c, c, positions) + conv_macs(3, c, growth, positions)
    return total + conv_macs(1, c0 + depth * growth, 3 * out, positions)


def gated_resnet_params(f: int, context: int = 0, nin: bool = True) -> int:
    """Flow++ gated conv (flows.py:115-127): 3x3 conv on concat_elu (2F -> F), plus a 1x1
    projection of concat_elu(context) (2*context -> F) when a context is given, then
    concat_elu -> dropout -> 1x1 (3x3 when ``nin`` is false) 2F -> 2F, GLU, residual."""
    p = conv_params(3, 2 * f, f) + conv_params(1 if nin else 3, 2 * f, 2 * f)
    return p + (conv_params(1, 2 * context, f) if context else 0)


def gated_resnet_macs(f: int, positions: int, context: int = 0, nin: bool = True) -> int:
    m = conv_macs(3, 2 * f, f, positions) + conv_macs(1 if nin else 3, 2 * f, 2 * f, positions)
    return m + (conv_macs(1, 2 * context, f, positions) if context else 0)
