"""Layer descriptions: what a net is made of, written once (pure Python, no torch).

A net op's ``describe`` returns a tree of these frozen dataclasses. Its parameters and its
MACs (multiply-accumulates per example) are derived from the tree: the sum over the leaves,
plus the parameter-free matrix products an attention block declares in ``own_macs``. The
torch side builds one module per node from the same tree
(:func:`augflow_dsl.layers.instantiate.build`), each child under the name the tree gives it, so
numel() and torch's flop counter meet the counts by construction (tests/test_nets.py).

Children are the fields whose values are layers, in field order (which is the modules'
registration order, hence the state-dict order); a ``None`` field is an absent child.

Memory: ``kept(x, p)`` says what a layer keeps alive for the backward pass when it reads the
activation ``x`` (:class:`Act`: elements per example, bytes each, layout), one rule per description
type, written from what its torch module saves (measured with ``saved_tensors_hooks``,
tests/test_memory.py); ``augflow-dsl check --memory`` adds them up (:mod:`augflow_dsl.graph.memory`).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from math import prod
from typing import Literal, Protocol

Init = Literal["default", "zero", "data"]


# ---------------------------------------------------------------------------------------
# memory: what a layer keeps for the backward pass
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Precision:
    """Element sizes of the memory rules, in bytes: ``flow`` for the flow's own arithmetic (float32),
    ``net`` for the nets' convolutions and matrix products (float32; 2 under autocast to bfloat16,
    ``FlowModel.set_precision``), ``wide`` for what autocast runs in float32 (CUDA's op lists: exp,
    layer norm, softmax; CPU's autocast runs them in bfloat16: 2). Under autocast a conv keeps a
    bfloat16 copy of a float32 input and of its weight."""

    flow: int = 4
    net: int = 4
    wide: int = 4  # what autocast runs in float32 on CUDA (exp, layer norm, softmax); CPU's autocast: 2

    @property
    def autocast(self) -> bool:
        return self.net < self.flow


@dataclass(frozen=True)
class Act:
    """An activation as the memory rules see it: ``n`` elements per example of ``b`` bytes,
    channels-last in memory (``cl``) or not."""

    n: int
    b: int = 4
    cl: bool = False

    @property
    def bytes(self) -> int:
        return self.n * self.b


@dataclass(frozen=True)
class Kept:
    """What a layer (or an op) keeps alive for the backward pass, per example.

    ``own``: bytes of the tensors it creates and keeps, its output excepted; ``input``: it keeps
    the tensor it was given (or a view of it, hence all of it), which that tensor's creator counts
    once; ``output``: it keeps the tensor it returns, ``out``; ``alias``: ``"input"`` when its output
    is its input (or a view of it: a drop's kept half, a zero dropout), ``"own"`` when its output is
    a view of a tensor ``own`` already counts; ``context``: an op keeps the context the plan hands it;
    ``fixed``: bytes per batch rather than per example (weight-sized tensors)."""

    out: Act
    own: int = 0
    input: bool = False
    output: bool = False
    alias: Literal["", "input", "own"] = ""
    context: bool = False
    fixed: int = 0

    @property
    def passes_input(self) -> bool:
        """Its output is its input (or a view of it): the same tensor goes on."""
        return self.alias == "input"

    @property
    def views_own(self) -> bool:
        """Its output is a view of a tensor ``own`` already counts."""
        return self.alias == "own"


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


class KeepsRule(Protocol):
    def kept(self, x: Act, p: Precision) -> Kept: ...


def chain(x: Act, layers: Iterable[KeepsRule], p: Precision) -> Kept:
    """``layers`` applied one after the other to ``x``: the tensor between two of them is kept
    (once) when the one before keeps its output or the one after keeps its input; a layer whose
    output is its input passes the tensor on."""
    own = fixed = 0
    cur, first, last = x, None, False
    for layer in layers:
        k = layer.kept(cur, p)
        own, fixed = own + k.own, fixed + k.fixed
        if k.alias == "input":
            continue
        if first is None:
            first = k.input
        elif k.input or last:
            own += cur.bytes
        last, cur = k.output, k.out
    if first is None:
        return Kept(x, own=own, fixed=fixed, alias="input")
    return Kept(cur, own=own, input=first, output=last, fixed=fixed)


@dataclass(frozen=True)
class Layer:
    """A node of a description: its own parameters and MACs, and its named children."""

    def own_params(self) -> int:
        return 0

    def own_macs(self) -> int:
        """Multiply-accumulates per example that no child counts (attention's matmuls)."""
        return 0

    def children(self) -> tuple[tuple[str, "Layer"], ...]:
        names = _FIELD_NAMES.get(type(self))
        if names is None:  # dataclasses.fields is slow; solve counts thousands of layers per second
            names = _FIELD_NAMES[type(self)] = tuple(f.name for f in fields(self))
        return tuple((n, v) for n in names if isinstance(v := getattr(self, n), Layer))

    def params(self) -> int:
        return self._totals()[0]

    def macs(self) -> int:
        return self._totals()[1]

    def _totals(self) -> tuple[int, int]:
        """(parameters, MACs) of the layer and everything below, computed once per (frozen) layer."""
        got = self.__dict__.get("_totals_memo")
        if got is None:
            below = [c._totals() for _, c in self.children()]
            got = (self.own_params() + sum(b[0] for b in below), self.own_macs() + sum(b[1] for b in below))
            object.__setattr__(self, "_totals_memo", got)
        return got

    def kept(self, x: Act, p: Precision) -> Kept:
        """What the layer keeps for the backward pass reading ``x`` (default: its children one
        after the other, as a Sequential runs them)."""
        return chain(x, (c for _, c in self.children()), p)

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

    @property
    def gemm(self) -> bool:
        """Built as a GEMM over the channels-last view (layers/modules.py GemmConv2d's 1x1 path)."""
        return self.kernel == 1 and self.stride == 1 and (self.init == "data" or self.channels_last)

    def kept(self, x: Act, p: Precision) -> Kept:
        """Keeps its input (autograd's convolution saves it). Under autocast it keeps the bfloat16
        copy of a float32 input instead, and of its weight (per batch). A GEMM 1x1 on an input that
        is not channels-last folds the [N, H, W, C] view with a copy, which it keeps (for a batch
        of 2 or more; one example folds without a copy). Output channels-last when the input or
        the weight is, or for a GEMM."""
        out = Act(self.c_out * self.positions, p.net if p.autocast else x.b,
                  x.cl or self.gemm or self.channels_last)
        fixed = self.own_params() * p.net if p.autocast else 0
        if p.autocast and x.b > p.net:
            return Kept(out, own=x.n * p.net, fixed=fixed)
        if self.gemm and not x.cl:
            return Kept(out, own=x.bytes, fixed=fixed)
        return Kept(out, input=True, fixed=fixed)


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

    def kept(self, x: Act, p: Precision) -> Kept:
        """Keeps its input (under autocast a bfloat16 copy, and one of its weight)."""
        out = Act(self.c_out, p.net if p.autocast else x.b)
        if p.autocast:
            return Kept(out, own=x.n * p.net if x.b > p.net else 0, input=x.b <= p.net,
                        fixed=self.own_params() * p.net)
        return Kept(out, input=True)


@dataclass(frozen=True)
class BatchNorm(Leaf):
    """Batch norm over channels: gain and bias per channel (its running statistics are buffers)."""

    channels: int

    def own_params(self) -> int:
        return 2 * self.channels

    def kept(self, x: Act, p: Precision) -> Kept:
        """Keeps its input (and, per batch, the batch's and the running mean and variance per channel)."""
        return Kept(Act(x.n, x.b, x.cl), input=True, fixed=4 * self.channels * 4)


@dataclass(frozen=True)
class LayerNorm(Leaf):
    """Layer norm over the channels at each position (Flow++ code: biased variance, eps 1e-5),
    gain and bias per channel."""

    channels: int

    def own_params(self) -> int:
        return 2 * self.channels

    def kept(self, x: Act, p: Precision) -> Kept:
        """Keeps its input (a permuted view) and a float32 mean and inverse std per position; under
        autocast it runs in float32: it keeps a float32 copy of a bfloat16 input and returns float32."""
        stats = 2 * (x.n // self.channels) * 4
        if x.b < p.wide:
            return Kept(Act(x.n, p.wide, x.cl), own=stats + x.n * p.wide)
        return Kept(Act(x.n, x.b, x.cl), own=stats, input=True)


@dataclass(frozen=True)
class Activation(Leaf):
    """A parameter-free activation module (it holds a place in a sequence)."""

    kind: Literal["relu"] = "relu"

    def kept(self, x: Act, p: Precision) -> Kept:
        """ReLU keeps its output."""
        return Kept(Act(x.n, x.b, x.cl), output=True)


@dataclass(frozen=True)
class Dropout(Leaf):
    p: float = 0.0

    def kept(self, x: Act, p: Precision) -> Kept:
        """Keeps its mask (one byte per element); rate 0 returns its input."""
        if self.p == 0.0:
            return Kept(x, alias="input")
        return Kept(Act(x.n, x.b, x.cl), own=x.n)


@dataclass(frozen=True)
class Parameter(Leaf):
    """A learned tensor of ``shape`` drawn from N(0, std^2) (Flow++'s position embedding)."""

    shape: tuple[int, ...]
    std: float

    def own_params(self) -> int:
        return prod(self.shape)

    def kept(self, x: Act, p: Precision) -> Kept:
        """Not on the data path (the net that holds it adds it where it is used)."""
        return Kept(x, alias="input")


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
