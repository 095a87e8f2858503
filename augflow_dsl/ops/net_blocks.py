"""The composite blocks of layer descriptions (pure Python, no torch): residual and dense blocks,
gated convs, attentions, each a tree of the generic types of :mod:`.net_layers` with its own
MACs and memory rule. Public face: :mod:`.net_descriptions`; torch modules:
:mod:`augflow_dsl.layers.net_modules`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .net_layers import Activation, BatchNorm, Conv, Dropout, Layer, Sequential
from .net_memory import Act, Kept, Precision, chain

__all__ = ["Residual", "ResBlock", "DenseLayer", "GatedConv1x1", "DenseBlock", "GatedResNet", "GatedAttention",
           "NystromAttention"]


@dataclass(frozen=True)
class Residual(Layer):
    """A residual connection around a block of layers (He et al. 2016, eq. 1): x + body(x); the
    body gives as many channels as it reads (the net layer ``residual([...])``)."""

    body: Sequential

    def kept(self, x: Act, p: Precision) -> Kept:
        """The body's tensors; its output, when it keeps it, is its own (x + body(x) is a new tensor,
        and the sum keeps nothing)."""
        k = self.body.kept(x, p)
        out = Act(x.n, max(x.b, k.out.b), x.cl and k.out.cl)
        return Kept(out, own=k.own + (k.out.bytes if k.output else 0), input=k.input, fixed=k.fixed)


@dataclass(frozen=True)
class ResBlock(Layer):
    """RealNVP residual block (Dinh et al. 2017, Sec. 4.1): ReLU(x + BN(3x3(ReLU(BN(3x3(x))))))."""

    body: Sequential

    @classmethod
    def of(cls, f: int, positions: int) -> "ResBlock":
        conv = Conv(f, f, 3, positions)
        return cls(Sequential((conv, BatchNorm(f), Activation(), conv, BatchNorm(f))))

    def kept(self, x: Act, p: Precision) -> Kept:
        """The body's tensors, then relu(x + body(x)), which keeps its output."""
        k = self.body.kept(x, p)
        out = Act(x.n, k.out.b, x.cl)
        return Kept(out, own=k.own + (k.out.bytes if k.output else 0), input=k.input, output=True, fixed=k.fixed)


@dataclass(frozen=True)
class DenseLayer(Layer):
    """DenseFlow dense layer (Grcic et al. 2021, Sec. 2.4; denseblock.py:6-30):
    cat(x, ReLU(3x3 c -> growth(ReLU(1x1 c -> c(x))))), channels-last."""

    net: Sequential

    @classmethod
    def of(cls, c: int, growth: int, positions: int) -> "DenseLayer":
        return cls(Sequential((Conv(c, c, 1, positions, channels_last=True), Activation(),
                               Conv(c, growth, 3, positions, channels_last=True), Activation())))

    def kept(self, x: Act, p: Precision) -> Kept:
        """Autograd's path (a dense block under autocast): the net's tensors; cat(x, g) is new."""
        k = self.net.kept(x, p)
        g = k.out
        return Kept(Act(x.n + g.n, g.b, x.cl and g.cl), own=k.own + (g.bytes if k.output else 0),
                    input=k.input, fixed=k.fixed)


@dataclass(frozen=True)
class GatedConv1x1(Layer):
    """DenseFlow's gated 1x1 conv (denseblock.py:45-64): c -> 3 out, output a + b sigmoid(c)."""

    conv: Conv

    @classmethod
    def of(cls, c_in: int, out: int, positions: int) -> "GatedConv1x1":
        return cls(Conv(c_in, 3 * out, 1, positions, channels_last=True))

    def kept(self, x: Act, p: Precision) -> Kept:
        """The conv's output (b * sigmoid(c) keeps b, a view of it) and sigmoid(c)."""
        k = self.conv.kept(x, p)
        z = k.out
        return Kept(Act(z.n // 3, z.b, z.cl), own=k.own + z.bytes + z.n // 3 * z.b, input=k.input, fixed=k.fixed)


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

    def kept(self, x: Act, p: Precision) -> Kept:
        """Eager float32 training runs the hand-written backward (layers/dense_kernel.py), which
        keeps the [N*H*W, c0 + depth g] buffer (the input is copied into it), each layer's 1x1
        activations (c0 + k g channels), the gate's conv output and sigmoid; under autocast,
        autograd's path: the dense layers one after the other, then the gate."""
        if p.autocast:
            k = chain(x, (self.layers, self.gate), p)
            return Kept(k.out, own=k.own + (k.out.bytes if k.output else 0), input=k.input, fixed=k.fixed)
        conv = self.gate.conv
        out, hw = conv.c_out // 3, conv.positions
        acts = sum(layer.net.layers[0].c_in for layer in self.layers.layers)
        return Kept(Act(out * hw, x.b, True), own=hw * (conv.c_in + 4 * out + acts) * x.b)


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

    def kept(self, x: Act, p: Precision) -> Kept:
        """concat_elu(x) keeps its two exponentials (float32 under autocast) and its output, which
        conv1 reads; the same for concat_elu(h); then the dropout's mask and output (conv2 keeps
        its input), conv2's output (the GLU keeps a view of it) and the sigmoid of its gate. The
        context's concat_elu, computed once for every block, is the net's (ConvAttention)."""
        own, fixed = 0, 0
        h = x
        for conv in (self.conv1, self.conv2):
            own += 2 * h.n * max(h.b, p.wide)             # exp(min(h, 0)), exp(-max(h, 0))
            e = Act(2 * h.n, h.b, h.cl)                   # concat_elu(h)
            if conv is self.conv2:
                d = self.drop.kept(e, p)
                own += d.own
                e = d.out
            k = conv.kept(e, p)
            own, fixed = own + k.own + (e.bytes if k.input else 0), fixed + k.fixed
            h = k.out
            if conv is self.conv1 and self.ctx is not None:
                c = self.ctx.kept(Act(self.ctx.c_in * self.ctx.positions, p.flow, True), p)
                own, fixed = own + c.own, fixed + c.fixed
        own += h.bytes + h.n // 2 * h.b                   # conv2's output, sigmoid(gate)
        return Kept(Act(x.n, x.b, x.cl), own=own, fixed=fixed)


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

    def kept(self, x: Act, p: Precision, pos: bool = False) -> Kept:
        """qkv keeps its input (x + pos, a new tensor, when the net adds a position embedding);
        the fused attention kernel keeps q, k, v (views of qkv's output), its output and a
        float32 log-sum-exp per head and position; the merged heads (a copy; with one head a view of
        the output) go through the dropout (its mask) to proj, which keeps its input; then the GLU
        keeps proj's output and the sigmoid of its gate."""
        xin = Act(x.n, max(x.b, p.flow), x.cl) if pos else x  # x + pos promotes to the embedding's float32
        q = self.qkv.kept(xin, p)
        own, fixed = q.own + (xin.bytes if q.input and pos else 0), q.fixed
        keeps_input = q.input and not pos
        t = q.out
        own += t.bytes + x.n * t.b + self.heads * self.positions * 4
        a = Act(x.n, t.b, True)  # one head: a view of the attention's output; several: a copy
        d = self.drop.kept(a, p)
        own += d.own
        k = self.proj.kept(d.out, p)
        own, fixed = own + k.own, fixed + k.fixed
        if k.input and (self.heads > 1 or d.alias != "input"):
            own += d.out.bytes
        h = k.out
        own += h.bytes + h.n // 2 * h.b
        return Kept(Act(x.n, x.b, x.cl), own=own, input=keeps_input, fixed=fixed)


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

    def kept(self, x: Act, p: Precision) -> Kept:
        """qkv keeps its input. With one head the products keep qkv's output (q, k and v are views
        of it) and the scaled q (spatial tokens); with several they fold the heads into a batch,
        copying q, k^T and v, and keep the copies instead. Then the softmax kernels n x m and m x n
        (float32 under CUDA's autocast), K1 pinv(K2), the landmarks and K3 V; K2 and the
        pseudo-inverse's iterates (6 m x m per iteration, eq. 16); the merged heads (a copy), which
        the output conv keeps."""
        q = self.qkv.kept(x, p)
        own, fixed = q.own, q.fixed
        t = q.out
        n, m, e, hd, b = self.positions, self.landmarks, self.embed, self.heads, t.b
        sb = max(b, p.wide)
        if hd == 1:
            own += t.bytes + (e * n * b if self.tokens == "spatial" else 0)
        else:
            own += 3 * e * n * b
        own += hd * m * (2 * n * sb + n * b) + 3 * m * e * b
        own += hd * m * m * ((6 * self.iters + 1) * b + sb) + hd * (2 * m + 3) * b
        y = Act(e * n, b, True)
        k = self.out.kept(y, p)
        own, fixed = own + k.own + (y.bytes if k.input else 0), fixed + k.fixed
        return Kept(k.out, own=own, input=q.input, fixed=fixed)
