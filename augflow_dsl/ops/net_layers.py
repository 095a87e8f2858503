"""The generic layer description types: the :class:`Layer` node, the leaves (one torch module or
parameter each) and the containers (pure Python, no torch). Public face: :mod:`.net_descriptions`;
the composite blocks are in :mod:`.net_blocks`, the memory types in :mod:`.net_memory`.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from math import prod
from typing import Literal

from .net_memory import Act, Kept, Precision, chain

Init = Literal["default", "zero", "data"]
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}

__all__ = ["Init", "Layer", "Leaf", "Conv", "Linear", "BatchNorm", "LayerNorm", "Activation", "Dropout",
           "Parameter", "ActNorm", "ConcatELU", "WeightNorm", "ZeroConv", "Sequential", "LayerList", "Net"]


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
    activations (a 1x1 is one GEMM; a larger kernel keeps its weight channels-last). ``edge_bias``
    (k > 1, stride 1): Glow's edge bias (openai/glow tfops.py add_edge_padding): x is zero-padded and
    a channel that is 1 on the padded border and 0 inside is appended, so the conv reads c_in + 1
    channels and can tell the border from data."""

    c_in: int
    c_out: int
    kernel: int
    positions: int
    stride: int = 1
    bias: bool = True
    init: Init = "default"
    init_scale: float = 1.0
    channels_last: bool = False
    edge_bias: bool = False

    @property
    def padding(self) -> int:
        return (self.kernel - 1) // 2 if self.stride == 1 else 0

    @property
    def reads(self) -> int:
        """Input channels of the weight: c_in, and the border channel of an edge-biased conv."""
        return self.c_in + (1 if self.edge_bias else 0)

    def own_params(self) -> int:
        return self.kernel * self.kernel * self.reads * self.c_out + (self.c_out if self.bias else 0)

    def own_macs(self) -> int:
        return self.kernel * self.kernel * self.reads * self.c_out * self.positions

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
        if self.edge_bias:  # it keeps the padded input with the border channel (the border's positions not counted)
            return Kept(out, own=x.n // self.c_in * self.reads * (p.net if p.autocast else x.b), fixed=fixed)
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
    """Batch norm over channels: gain and bias per channel (its running statistics are buffers).
    ``image``: over N, H, W of [N, C, H, W] (else over N of vectors [N, C])."""

    channels: int
    image: bool = True

    def own_params(self) -> int:
        return 2 * self.channels

    def kept(self, x: Act, p: Precision) -> Kept:
        """Keeps its input (and, per batch, the batch's and the running mean and variance per channel)."""
        return Kept(Act(x.n, x.b, x.cl), input=True, fixed=4 * self.channels * 4)


@dataclass(frozen=True)
class LayerNorm(Leaf):
    """Layer norm over the channels at each position (Flow++ code: biased variance, eps 1e-5),
    gain and bias per channel. ``image``: [N, C, H, W] (else vectors [N, C])."""

    channels: int
    image: bool = True

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
    """A parameter-free elementwise activation module (it holds a place in a sequence)."""

    kind: Literal["relu", "elu", "gelu", "tanh"] = "relu"

    def kept(self, x: Act, p: Precision) -> Kept:
        """ReLU and tanh keep their output; ELU and GELU their input (torch's derivatives.yaml)."""
        if self.kind in ("elu", "gelu"):
            return Kept(Act(x.n, x.b, x.cl), input=True)
        return Kept(Act(x.n, x.b, x.cl), output=True)


@dataclass(frozen=True)
class ConcatELU(Leaf):
    """concat_elu(x) = ELU(cat(x, -x)) over channels (PixelCNN++, Flow++): twice the channels."""

    def kept(self, x: Act, p: Precision) -> Kept:
        """Keeps its two exponentials (float32 under autocast; layers/modules.py _ConcatELU), not its output."""
        return Kept(Act(2 * x.n, x.b, x.cl), own=2 * x.n * max(x.b, p.wide))


@dataclass(frozen=True)
class ActNorm(Leaf):
    """Glow's actnorm inside a net (Kingma & Dhariwal 2018, Sec. 3.1; glow model.py actnorm):
    y = (x + b) * exp(logs) per channel, b and logs set from the first training batch so that
    y has zero mean and unit variance per channel (data-dependent init). 2C parameters."""

    channels: int
    image: bool = True

    def own_params(self) -> int:
        return 2 * self.channels

    def kept(self, x: Act, p: Precision) -> Kept:
        """Keeps x + b (a new tensor, logs' gradient reads it), float32 like b under autocast."""
        b = max(x.b, p.flow)
        return Kept(Act(x.n, b, x.cl), own=x.n * b, fixed=self.channels * p.flow)  # exp(logs)


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


@dataclass(frozen=True)
class WeightNorm(Leaf):
    """Weight normalisation (Salimans & Kingma 2016) of a conv or linear layer: its weight is
    g v / ||v||, the norm per output channel, g and v learned (torch's
    ``parametrizations.weight_norm``, dim 0). Parameters: the layer's and one g per output channel."""

    layer: Conv | Linear

    def own_params(self) -> int:
        return self.layer.c_out

    def kept(self, x: Act, p: Precision) -> Kept:
        """The layer's tensors, and per batch the norms and the weight it computes (fixed)."""
        k = self.layer.kept(x, p)
        w = self.layer.own_params() - (self.layer.c_out if self.layer.bias else 0)
        return Kept(k.out, own=k.own, input=k.input, output=k.output, fixed=k.fixed + (w + self.layer.c_out) * p.flow)


@dataclass(frozen=True)
class ZeroConv(Layer):
    """Glow's Conv2dZeros (glow model.py conv2d_zeros): a zero-initialised conv whose output is
    multiplied by exp(logscale * logs), logs a learned per-channel vector starting at zero.
    Parameters: the conv's and C_out."""

    conv: Conv
    logs: Parameter
    logscale: float = 3.0

    @classmethod
    def of(cls, c_in: int, c_out: int, kernel: int, positions: int, logscale: float,
           edge_bias: bool = False) -> "ZeroConv":
        conv = Conv(c_in, c_out, kernel, positions, init="zero", edge_bias=edge_bias)
        return cls(conv, Parameter((c_out, 1, 1), 0.0), logscale)

    def kept(self, x: Act, p: Precision) -> Kept:
        """The conv's tensors, then its output (the product with exp(logscale * logs) keeps it); the
        product is float32 like logs under autocast."""
        k = self.conv.kept(x, p)
        out = Act(k.out.n, max(k.out.b, p.flow), k.out.cl)
        return Kept(out, own=k.own + k.out.bytes, input=k.input, fixed=k.fixed + self.logs.params() * p.flow)


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
