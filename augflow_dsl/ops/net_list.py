"""Nets written in the spec as a list of layers (issue 22): the net layers and the ``layers`` net op.

A spec writes a conditioner net as a list of *net layers*::

    net glow_ref(f): [conv(3, f), actnorm, relu, conv(1, f), actnorm, relu, zero_conv(3, logscale: 3)]
    module step: [actnorm, conv1x1, affine_coupling(net: glow_ref(512))]

or inline, ``affine_coupling(net: [conv(3, 64), relu, zero_conv(3)])``, or as the op
``layers(list: [...])``. The list becomes one call of the net op ``layers`` (role net), whose
``describe`` folds it into a :class:`~.net_descriptions.Sequential`: parameters, MACs, memory and
the torch module (:class:`augflow_dsl.layers.net_list.LayeredNet`) all derive from that
description, as for the named nets.

Net layers are their own namespace, apart from the flow ops: ``actnorm`` in a list is Glow's
per-channel actnorm inside a net (data-initialised), not the flow op. Each definition
(:class:`NetLayerDef`, registered in :data:`NET_LAYERS`) turns its arguments and the running
channel count into one layer description. Semantics:

* the net reads cat(x, context): the first layer sees ``io.c_in + io.context`` channels;
* a layer's ``out`` left out (``conv(3)``, ``linear``, ``zero_conv(3)``) is the coupling's
  output width ``io.c_out``; the last layer must give ``io.c_out`` channels, else a located error
  names it and both numbers;
* ``residual([...])`` is x + block(x) around a list of layers; it and the blocks the named nets are
  made of are defined in :mod:`.net_list_blocks`;
* image layers (conv, zero_conv and the blocks but ``residual``) need image data, vector layers (linear,
  zero_linear) vector data; the rest take either;
* the list should end with ``zero_conv`` / ``zero_linear`` so that the coupling starts at the
  identity (nothing enforces it).
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from .net_descriptions import (ActNorm, Activation, BatchNorm, ConcatELU, Conv, Dropout, Layer, LayerNorm, Linear, Net,
                               Sequential, WeightNorm, ZeroConv)
from .registry import NetIO, NetOp, OpArgs, OpShapeError, register

IMAGE, VECTOR, ANY = "image", "vector", "any"


class NetLayerError(OpShapeError):
    """A net layer cannot stand where it is; ``loc`` is the layer's place in the spec."""

    def __init__(self, message: str, loc: Any = None):
        super().__init__(message)
        self.loc = loc


class NetLayerCall:
    """One net layer of a list: its name, validated arguments and place in the spec (hashable, so a
    ``layers`` call's counts are remembered like any op's)."""

    __slots__ = ("name", "args", "loc")

    def __init__(self, name: str, args: OpArgs, loc: Any = None):
        self.name, self.args, self.loc = name, args, loc

    def _key(self):
        return self.name, self.args, self.loc

    def __eq__(self, other):
        return isinstance(other, NetLayerCall) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        given = ", ".join(f"{k}: {_spelled(getattr(self.args, k))}" for k in type(self.args).model_fields)
        return f"{self.name}({given})" if given else self.name

    @property
    def definition(self) -> "NetLayerDef":
        return NET_LAYERS[self.name]


def _spelled(value: Any) -> str:
    """An argument as the spec writes it: a block of layers as [a, b, ...]."""
    return f"[{', '.join(map(repr, value))}]" if isinstance(value, tuple) else repr(value) \
        if isinstance(value, NetLayerCall) else str(value)


class NetLayerDef:
    """A net layer: ``describe(a, c, io)`` is its description reading ``c`` channels, and the
    channels it gives."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    data: ClassVar[str] = ANY  # IMAGE, VECTOR or ANY
    Args: ClassVar[type[OpArgs]] = OpArgs

    def describe(self, a, c: int, io: NetIO) -> tuple[Layer, int]:
        raise NotImplementedError


NET_LAYERS: dict[str, NetLayerDef] = {}


def net_layer(cls: type[NetLayerDef]) -> type[NetLayerDef]:
    if cls.name in NET_LAYERS:
        raise RuntimeError(f"net layer '{cls.name}' registered twice")
    NET_LAYERS[cls.name] = cls()
    return cls


_OUT = Field(default=None, gt=0, description="output channels; left out: the coupling's (io.c_out)")
_EDGE = ("Glow's edge bias (openai/glow tfops.py add_edge_padding): the conv also reads a channel that is 1 on the "
         "zero-padded border, 0 inside (k x k x 1 x out more weights); a 1x1 has no border: no channel")


class _ConvArgs(OpArgs):
    kernel: int = Field(default=3, gt=0, description="kernel size (odd: 'same' padding)")
    out: int | None = _OUT
    bias: bool = Field(default=True, description="a bias per output channel")
    edge_bias: bool = Field(default=False, description=_EDGE)
    init: Literal["default", "data"] = Field(default="default", description=(
        "default: torch's; data: Flow++'s data-dependent init (flows.py:26-66: the first training batch's output "
        "gets zero mean and unit std per channel; needs the bias)"))


@net_layer
class _Conv(NetLayerDef):
    name, data, Args = "conv", IMAGE, _ConvArgs
    summary = "k x k convolution, 'same' padding, torch's default or Flow++'s data-dependent init"

    def describe(self, a, c, io):
        if a.init == "data" and (not a.bias or a.edge_bias):
            raise NetLayerError("net layer 'conv': init: data rescales the weight and sets the bias; it needs "
                                "bias: true and no edge_bias")
        out = a.out or io.c_out
        return Conv(c, out, a.kernel, io.positions, bias=a.bias, init=a.init,
                    edge_bias=a.edge_bias and a.kernel > 1), out


class _ZeroConvArgs(OpArgs):
    kernel: int = Field(default=3, gt=0, description="kernel size (odd: 'same' padding)")
    out: int | None = _OUT
    logscale: float | None = Field(default=None, gt=0, description=(
        "Glow's Conv2dZeros: output times exp(logscale * logs), logs learned per channel from 0; none: a plain "
        "zero-initialised conv (glow_net's last layer)"))
    edge_bias: bool = Field(default=False, description=_EDGE)


@net_layer
class _ZeroConvDef(NetLayerDef):
    name, data, Args = "zero_conv", IMAGE, _ZeroConvArgs
    summary = "zero-initialised convolution (the last layer: the coupling starts at the identity)"

    def describe(self, a, c, io):
        out, n = a.out or io.c_out, io.positions
        edge = a.edge_bias and a.kernel > 1
        if a.logscale is None:
            return Conv(c, out, a.kernel, n, init="zero", edge_bias=edge), out
        return ZeroConv.of(c, out, a.kernel, n, a.logscale, edge), out


class _LinearArgs(OpArgs):
    out: int | None = _OUT
    bias: bool = Field(default=True, description="a bias per output feature")


@net_layer
class _LinearDef(NetLayerDef):
    name, data, Args = "linear", VECTOR, _LinearArgs
    summary = "fully connected layer, torch's default init"

    def describe(self, a, c, io):
        out = a.out or io.c_out
        return Linear(c, out, bias=a.bias), out


class _ZeroLinearArgs(OpArgs):
    out: int | None = _OUT


@net_layer
class _ZeroLinear(NetLayerDef):
    name, data, Args = "zero_linear", VECTOR, _ZeroLinearArgs
    summary = "zero-initialised fully connected layer (the last layer of a vector net)"

    def describe(self, a, c, io):
        out = a.out or io.c_out
        return Linear(c, out, init="zero"), out


def _simple(layer_name: str, make, summary: str, data: str = ANY) -> None:
    """Register an argument-free layer that keeps the channel count; ``make(c, io)`` is its description."""
    cls = type(f"_{layer_name}", (NetLayerDef,), dict(
        name=layer_name, summary=summary, data=data, describe=lambda self, a, c, io: (make(c, io), c)))
    net_layer(cls)


_simple("actnorm", lambda c, io: ActNorm(c, image=io.h != 0),
        "Glow's actnorm inside the net: per-channel bias and log-scale, data-initialised (not the flow op)")
_simple("batchnorm", lambda c, io: BatchNorm(c, image=io.h != 0), "batch norm over the channels")
_simple("layernorm", lambda c, io: LayerNorm(c, image=io.h != 0), "layer norm over the channels at each position")
for _kind in ("relu", "elu", "gelu", "tanh"):
    _simple(_kind, lambda c, io, k=_kind: Activation(k), f"{_kind} activation")


@net_layer
class _ConcatELUDef(NetLayerDef):
    name = "concat_elu"
    summary = "ELU(cat(x, -x)): doubles the channels"

    def describe(self, a, c, io):
        return ConcatELU(), 2 * c


class _DropoutArgs(OpArgs):
    p: float = Field(ge=0.0, lt=1.0, description="dropout rate")


@net_layer
class _DropoutDef(NetLayerDef):
    name, Args = "dropout", _DropoutArgs
    summary = "dropout (training only)"

    def describe(self, a, c, io):
        return Dropout(a.p), c


class _WeightNormArgs(OpArgs):
    layer: NetLayerCall = Field(description="the conv or linear layer to normalise, e.g. weightnorm(conv(3, 64))")


@net_layer
class _WeightNormDef(NetLayerDef):
    name, Args = "weightnorm", _WeightNormArgs
    summary = "weight normalisation of a conv or linear layer: weight = g v / ||v|| per output channel"
    wraps = ("conv", "linear")

    def describe(self, a, c, io):
        inner, c = a.layer.definition.describe(a.layer.args, c, io)
        return WeightNorm(inner), c


def _check(call: NetLayerCall, io: NetIO) -> None:
    """The layer (and a layer it wraps) can read this net's data."""
    d = call.definition
    if d.data == IMAGE and io.h == 0:
        raise NetLayerError(f"net layer '{call.name}' needs image data; this net reads {_what(io)}", call.loc)
    if d.data == VECTOR and io.h != 0:
        raise NetLayerError(f"net layer '{call.name}' needs vector data; this net reads {_what(io)} (use conv "
                            f"and zero_conv)", call.loc)
    if getattr(call.args, "kernel", 1) % 2 == 0:
        raise NetLayerError(f"net layer '{call.name}': kernel {call.args.kernel} is even; 'same' padding needs an "
                            f"odd kernel", call.loc)
    inner = getattr(call.args, "layer", None)
    if isinstance(inner, NetLayerCall):
        if inner.name not in getattr(d, "wraps", ()):
            raise NetLayerError(f"net layer '{call.name}' wraps {' or '.join(d.wraps)}; got '{inner.name}'",
                                inner.loc)
        _check(inner, io)


def _what(io: NetIO) -> str:
    return f"{io.c_in} x {io.h} x {io.w} images" if io.h else f"vectors of {io.c_in} features"


def chain_layers(layers: tuple[NetLayerCall, ...], c: int, io: NetIO) -> tuple[tuple[Layer, ...], int]:
    """The layers' descriptions, one after the other from ``c`` channels, and the channels they give; an
    error a layer raises without a place is placed at that layer."""
    out = []
    for call in layers:
        _check(call, io)
        try:
            layer, c = call.definition.describe(call.args, c, io)
        except NetLayerError as e:
            if e.loc is None:
                e.loc = call.loc
            raise
        out.append(layer)
    return tuple(out), c


def fold(layers: tuple[NetLayerCall, ...], io: NetIO) -> Sequential:
    """The layer list as one Sequential reading cat(x, context), checked against ``io``."""
    if not layers:
        raise NetLayerError("a net written as layers needs at least one layer")
    out, c = chain_layers(layers, io.c_in + io.context, io)
    if c != io.c_out:
        last = layers[-1]
        where = f" (line {last.loc.line})" if last.loc is not None else ""
        raise NetLayerError(f"the net's last layer '{last.name}'{where} gives {c} channels, but the coupling needs "
                            f"{io.c_out}; leave its 'out' out to take the coupling's", last.loc)
    return Sequential(out)


@register
class Layers(NetOp):
    """A net written in the spec as a list of net layers, run one after the other on cat(x, context):
    ``net NAME(params): [conv(3, f), relu, zero_conv(3)]``, a list given as a coupling's ``net``
    (``net: [linear(64), relu, zero_linear]``) and ``layers([...])`` are calls of this op. The net
    layers (the table at the end of this reference) are their own namespace: ``actnorm`` in the list
    is Glow's data-initialised actnorm inside the net, not the flow op. A layer's ``out`` left out is
    the coupling's width, which the last layer must give (a located error names it and both
    numbers); image layers need images, vector layers vectors; ``n * [...]`` repeats layers;
    ``residual([...])`` adds a block's input to its output, and the blocks the named nets are made
    of (resblock, gated_conv, attention, nystrom_attention, dense_block, gated_conv1x1) are layers. End
    with ``zero_conv`` / ``zero_linear`` so that the coupling starts at the identity. Parameters,
    MACs, memory and the torch module derive from the one description the list folds into."""

    summary = "a net written as a list of net layers, e.g. [conv(3, 64), relu, zero_conv(3)]"
    equation = "issue 22: nets written in the spec (net layers: `augflow-dsl ops` lists them)"
    shape_rule = ("(in + context) channels -> each layer in turn -> out; the last layer must give out; image layers "
                  "need images, vector layers vectors")

    name = "layers"

    class Args(OpArgs):
        list: tuple[NetLayerCall, ...] = Field(description="the net layers, in order (names from `augflow-dsl ops`)")

    def check_io(self, a, io):
        fold(a.list, io)

    def describe(self, a, io):
        return Net((("net", fold(a.list, io)),))


__all__ = ["NET_LAYERS", "IMAGE", "VECTOR", "ANY", "NetLayerCall", "NetLayerDef", "NetLayerError", "Layers",
           "chain_layers", "fold", "net_layer"]
