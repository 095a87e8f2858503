"""Layer descriptions: what a net is made of, written once (pure Python, no torch).

A net op's ``describe`` returns a tree of these frozen dataclasses. Its parameters and its
MACs (multiply-accumulates per example) are derived from the tree: the sum over the leaves,
plus the parameter-free matrix products an attention block declares in ``own_macs``. The
torch side builds one module per node from the same tree
(:func:`augflow_dsl.layers.build.build`), each child under the name the tree gives it, so
numel() and torch's flop counter meet the counts by construction (tests/test_nets.py).

Children are the fields whose values are layers, in field order (which is the modules'
registration order, hence the state-dict order); a ``None`` field is an absent child.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from math import prod
from typing import Literal

Init = Literal["default", "zero", "data"]


@dataclass(frozen=True)
class Layer:
    """A node of a description: its own parameters and MACs, and its named children."""

    def own_params(self) -> int:
        return 0

    def own_macs(self) -> int:
        """Multiply-accumulates per example that no child counts (attention's matmuls)."""
        return 0

    def children(self) -> tuple[tuple[str, "Layer"], ...]:
        return tuple((f.name, v) for f in fields(self) if isinstance(v := getattr(self, f.name), Layer))

    def params(self) -> int:
        return self.own_params() + sum(c.params() for _, c in self.children())

    def macs(self) -> int:
        return self.own_macs() + sum(c.macs() for _, c in self.children())

    def leaves(self, prefix: str = "") -> Iterator[tuple[str, "Leaf"]]:
        """(dotted path, leaf) for every leaf below; the path is the built module's name."""
        for name, child in self.children():
            path = f"{prefix}.{name}" if prefix else name
            if isinstance(child, Leaf):
                yield path, child
            else:
                yield from child.leaves(path)


@dataclass(frozen=True)
class Leaf(Layer):
    """A layer built into one torch module (or one parameter) holding all its parameters."""


# ---------------------------------------------------------------------------------------
# leaves
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Conv(Leaf):
    """k x k convolution c_in -> c_out, 'same' padding at stride 1 (none otherwise), computed at
    ``positions`` output positions. ``init``: default (torch's), zero (the last layer of a
    coupling net, so the coupling starts at the identity) or data (Flow++'s data-dependent
    init, flows.py:26-66, output std ``init_scale``). ``channels_last``: runs on channels-last
    activations (a 1x1 is one GEMM; a larger kernel keeps its weight channels-last)."""

    c_in: int
    c_out: int
    kernel: int
    positions: int
    stride: int = 1
    bias: bool = True
    init: Init = "default"
    init_scale: float = 1.0
    channels_last: bool = False

    @property
    def padding(self) -> int:
        return (self.kernel - 1) // 2 if self.stride == 1 else 0

    def own_params(self) -> int:
        return self.kernel * self.kernel * self.c_in * self.c_out + (self.c_out if self.bias else 0)

    def own_macs(self) -> int:
        return self.kernel * self.kernel * self.c_in * self.c_out * self.positions


@dataclass(frozen=True)
class Linear(Leaf):
    """Fully connected c_in -> c_out (vector data: one position)."""

    c_in: int
    c_out: int
    bias: bool = True
    init: Literal["default", "zero"] = "default"

    def own_params(self) -> int:
        return self.c_in * self.c_out + (self.c_out if self.bias else 0)

    def own_macs(self) -> int:
        return self.c_in * self.c_out


@dataclass(frozen=True)
class BatchNorm(Leaf):
    """Batch norm over channels: gain and bias per channel (its running statistics are buffers)."""

    channels: int

    def own_params(self) -> int:
        return 2 * self.channels


@dataclass(frozen=True)
class LayerNorm(Leaf):
    """Layer norm over the channels at each position (Flow++ code: biased variance, eps 1e-5),
    gain and bias per channel."""

    channels: int

    def own_params(self) -> int:
        return 2 * self.channels


@dataclass(frozen=True)
class Activation(Leaf):
    """A parameter-free activation module (it holds a place in a sequence)."""

    kind: Literal["relu"] = "relu"


@dataclass(frozen=True)
class Dropout(Leaf):
    p: float = 0.0


@dataclass(frozen=True)
class Parameter(Leaf):
    """A learned tensor of ``shape`` drawn from N(0, std^2) (Flow++'s position embedding)."""

    shape: tuple[int, ...]
    std: float

    def own_params(self) -> int:
        return prod(self.shape)


# ---------------------------------------------------------------------------------------
# containers
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sequential(Layer):
    """Layers applied one after the other; children named 0, 1, ..."""

    layers: tuple[Layer, ...]

    def children(self):
        return tuple((str(i), x) for i, x in enumerate(self.layers))


@dataclass(frozen=True)
class LayerList(Layer):
    """Layers the forward wires itself (a module list); children named 0, 1, ..."""

    layers: tuple[Layer, ...]

    def children(self):
        return tuple((str(i), x) for i, x in enumerate(self.layers))


@dataclass(frozen=True)
class Net(Layer):
    """A whole net (or a context net, or a drop's prior conv): its named parts."""

    parts: tuple[tuple[str, Layer], ...] = ()

    def children(self):
        return self.parts


# ---------------------------------------------------------------------------------------
# composite blocks
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResBlock(Layer):
    """RealNVP residual block (Dinh et al. 2017, Sec. 4.1): ReLU(x + BN(3x3(ReLU(BN(3x3(x))))))."""

    body: Sequential

    @classmethod
    def of(cls, f: int, positions: int) -> "ResBlock":
        conv = Conv(f, f, 3, positions)
        return cls(Sequential((conv, BatchNorm(f), Activation(), conv, BatchNorm(f))))


@dataclass(frozen=True)
class DenseLayer(Layer):
    """DenseFlow dense layer (Grcic et al. 2021, Sec. 2.4; denseblock.py:6-30):
    cat(x, ReLU(3x3 c -> growth(ReLU(1x1 c -> c(x))))), channels-last."""

    net: Sequential

    @classmethod
    def of(cls, c: int, growth: int, positions: int) -> "DenseLayer":
        return cls(Sequential((Conv(c, c, 1, positions, channels_last=True), Activation(),
                               Conv(c, growth, 3, positions, channels_last=True), Activation())))


@dataclass(frozen=True)
class GatedConv1x1(Layer):
    """DenseFlow's gated 1x1 conv (denseblock.py:45-64): c -> 3 out, output a + b sigmoid(c)."""

    conv: Conv

    @classmethod
    def of(cls, c_in: int, out: int, positions: int) -> "GatedConv1x1":
        return cls(Conv(c_in, 3 * out, 1, positions, channels_last=True))


@dataclass(frozen=True)
class DenseBlock(Layer):
    """DenseFlow dense block (denseblock.py:6-64): ``depth`` dense layers (inputs c0, c0 + g,
    ...), then a gated 1x1 (c0 + depth g) -> out; ``residual`` adds the input (c0 == out)."""

    layers: Sequential
    gate: GatedConv1x1
    residual: bool = False

    @classmethod
    def of(cls, c0: int, depth: int, growth: int, out: int, positions: int,
           residual: bool = False) -> "DenseBlock":
        if residual and c0 != out:
            raise ValueError(f"a residual dense block needs c0 == out; got {c0} and {out}")
        layers = tuple(DenseLayer.of(c0 + i * growth, growth, positions) for i in range(depth))
        return cls(Sequential(layers), GatedConv1x1.of(c0 + depth * growth, out, positions), residual)


@dataclass(frozen=True)
class GatedResNet(Layer):
    """Flow++ gated conv (Ho et al. 2019, Sec. 3.3; flows.py:115-127): x + GLU(conv2(drop(
    concat_elu(conv1 3x3(concat_elu(x)) [+ ctx 1x1(concat_elu(context))])))), conv2 1x1 when
    ``nin`` else 3x3; data-dependent init throughout, conv2 at scale 0.1."""

    conv1: Conv
    ctx: Conv | None
    drop: Dropout
    conv2: Conv

    @classmethod
    def of(cls, f: int, positions: int, context: int = 0, nin: bool = True,
           dropout: float = 0.0) -> "GatedResNet":
        k = 1 if nin else 3
        return cls(Conv(2 * f, f, 3, positions, init="data"),
                   Conv(2 * context, f, 1, positions, init="data") if context else None,
                   Dropout(dropout),
                   Conv(2 * f, 2 * f, k, positions, init="data", init_scale=0.1))


@dataclass(frozen=True)
class GatedAttention(Layer):
    """Flow++ gated self-attention (Ho et al. 2019, Sec. 3.3; flows.py:129-187): x + GLU(proj
    1x1 F -> 2F(drop(MHA(qkv 1x1 F -> 3F(x + pos))))). Declares softmax(QK^T/sqrt(d)) V:
    2 n^2 F MACs over all heads."""

    qkv: Conv
    drop: Dropout
    proj: Conv
    heads: int
    positions: int

    @classmethod
    def of(cls, f: int, heads: int, positions: int, dropout: float = 0.0) -> "GatedAttention":
        return cls(Conv(f, 3 * f, 1, positions, init="data"), Dropout(dropout),
                   Conv(f, 2 * f, 1, positions, init="data", init_scale=0.1), heads, positions)

    def own_macs(self) -> int:
        return 2 * self.positions * self.positions * self.qkv.c_in


@dataclass(frozen=True)
class NystromAttention(Layer):
    """Nystrom self-attention (Xiong et al. 2021, eq. 14-16; DenseFlow Sec. 2.4,
    blocks/attention.py:36-82): qkv 1x1 C -> 3E, ``heads`` heads, ``landmarks`` landmarks,
    K1 pinv(K2) (K3 V) + V, out 1x1 E -> C. ``tokens``: spatial (the paper) or channel_runs
    (the reference code's layout); the same MACs either way."""

    qkv: Conv
    out: Conv
    heads: int
    landmarks: int
    positions: int
    iters: int = 6
    tokens: Literal["spatial", "channel_runs"] = "spatial"

    @classmethod
    def of(cls, channels: int, embed: int, heads: int, landmarks: int, positions: int, iters: int = 6,
           tokens: Literal["spatial", "channel_runs"] = "spatial") -> "NystromAttention":
        return cls(Conv(channels, 3 * embed, 1, positions, channels_last=True),
                   Conv(embed, channels, 1, positions, channels_last=True),
                   heads, landmarks, positions, iters, tokens)

    @property
    def embed(self) -> int:
        return self.out.c_in

    def own_macs(self) -> int:
        n, m, e, hd = self.positions, self.landmarks, self.embed, self.heads
        kernels = n * m * e + m * m * e + m * n * e  # Q K~^T, Q~ K~^T, Q~ K^T over all heads
        pinv = self.iters * 4 * m ** 3 * hd  # 4 m x m products per iteration, per head (eq. 16)
        product = hd * n * m * m + m * n * e + n * m * e  # K1 pinv(K2) per head, K3 V, their product
        return kernels + pinv + product
