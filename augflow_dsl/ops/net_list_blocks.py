"""The block layers of a net written as a list (issue 22; the list itself: :mod:`.net_list`).

Each reuses the description the named nets hold (:mod:`.net_blocks`), so a block written in a
list has the parameters, MACs, memory rule and torch module of the same block in a named net:

* ``residual([...])``: x + block(x) around a list of net layers (a new :class:`~.net_blocks.Residual`);
* ``resblock``: RealNVP's residual block, as ``resnet`` holds it;
* ``gated_conv``: Flow++'s gated residual conv, as ``conv_attention`` holds it;
* ``gated_conv1x1(out)``: DenseFlow's gated 1x1 conv, the gate of ``dense``'s dense block;
* ``dense_block``: DenseFlow's dense block, as ``dense`` and ``dense_attention`` hold it;
* ``attention``: Flow++'s gated multi-head self-attention, as ``conv_attention`` holds it;
* ``nystrom_attention``: DenseFlow's Nystrom self-attention, as ``dense_attention`` holds it.

All but ``residual`` read images. A block keeps its input width, except ``gated_conv1x1`` (``out``
left out: the coupling's, like a conv) and ``dense_block`` (``out`` left out: the width it reads).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .net_descriptions import (DenseBlock, GatedAttention, GatedConv1x1, GatedResNet, NystromAttention, ResBlock,
                               Residual, Sequential)
from .net_list import IMAGE, NetLayerCall, NetLayerDef, NetLayerError, chain_layers, net_layer
from .registry import OpArgs

__all__ = ["BLOCK_LAYERS"]

_DROPOUT = Field(default=0.0, ge=0.0, lt=1.0, description="dropout rate inside the block")


class _ResidualArgs(OpArgs):
    block: tuple[NetLayerCall, ...] = Field(description=(
        "the block's net layers, in order, e.g. residual([batchnorm, relu, conv(3, 64)]); the block must give "
        "the channels it reads"))


@net_layer
class _ResidualDef(NetLayerDef):
    name, Args = "residual", _ResidualArgs
    summary = "x + block(x) around a list of net layers (He et al. 2016, eq. 1); the block keeps the width"

    def describe(self, a, c, io):
        if not a.block:
            raise NetLayerError("net layer 'residual' needs at least one layer in its block")
        body, out = chain_layers(a.block, c, io)
        if out != c:
            last = a.block[-1]
            raise NetLayerError(f"the residual block's last layer '{last.name}' gives {out} channels, but x + "
                                f"block(x) needs the {c} channels the block reads", last.loc)
        return Residual(Sequential(body)), c


@net_layer
class _ResBlockDef(NetLayerDef):
    name, data = "resblock", IMAGE
    summary = "RealNVP residual block: relu(x + BN(3x3(relu(BN(3x3(x)))))), as resnet holds it"

    def describe(self, a, c, io):
        return ResBlock.of(c, io.positions), c


class _GatedArgs(OpArgs):
    dropout: float = _DROPOUT


@net_layer
class _GatedConvDef(NetLayerDef):
    name, data, Args = "gated_conv", IMAGE, _GatedArgs
    summary = "Flow++ gated residual conv: x + GLU(1x1(concat_elu(3x3(concat_elu(x))))), data-initialised"

    def describe(self, a, c, io):
        return GatedResNet.of(c, io.positions, 0, nin=True, dropout=a.dropout), c


class _Gated1x1Args(OpArgs):
    out: int | None = Field(default=None, gt=0, description="output channels; left out: the coupling's (io.c_out)")


@net_layer
class _GatedConv1x1Def(NetLayerDef):
    name, data, Args = "gated_conv1x1", IMAGE, _Gated1x1Args
    summary = "DenseFlow's gated 1x1 conv: 1x1 c -> 3 out, then a + b * sigmoid(g) (denseblock.py:45-64)"

    def describe(self, a, c, io):
        out = a.out or io.c_out
        return GatedConv1x1.of(c, out, io.positions), out


class _DenseBlockArgs(OpArgs):
    depth: int = Field(default=4, gt=0, description="dense layers")
    growth: int = Field(default=64, gt=0, description="channels each dense layer adds")
    out: int | None = Field(default=None, gt=0, description="output channels of the gate; left out: the block's input")
    residual: bool = Field(default=False, description="add the block's input to its output (out must equal it)")


@net_layer
class _DenseBlockDef(NetLayerDef):
    name, data, Args = "dense_block", IMAGE, _DenseBlockArgs
    summary = ("DenseFlow dense block: depth x cat(x, relu(3x3(relu(1x1(x))))), then a gated 1x1 to out (left "
               "out: the width it reads), + x if residual (denseblock.py:6-64)")

    def describe(self, a, c, io):
        out = a.out or c
        if a.residual and out != c:
            raise NetLayerError(f"net layer 'dense_block': residual: true adds the input, so out must be the {c} "
                                f"channels it reads; got out: {out}")
        return DenseBlock.of(c, a.depth, a.growth, out, io.positions, residual=a.residual), out


class _AttentionArgs(OpArgs):
    heads: int = Field(default=4, gt=0, description="attention heads (must divide the channels)")
    dropout: float = _DROPOUT


@net_layer
class _AttentionDef(NetLayerDef):
    name, data, Args = "attention", IMAGE, _AttentionArgs
    summary = ("Flow++ gated multi-head self-attention over positions: x + GLU(1x1(MHA(1x1 c -> 3c (x)))), "
               "data-initialised (flows.py:129-187)")

    def describe(self, a, c, io):
        if c % a.heads:
            raise NetLayerError(f"net layer 'attention': its {c} input channels are not divisible by "
                                f"{a.heads} heads")
        return GatedAttention.of(c, a.heads, io.positions, a.dropout), c


class _NystromArgs(OpArgs):
    embed: int | None = Field(default=None, gt=0, description="attention width E; left out: half the channels")
    heads: int = Field(default=1, gt=0, description="attention heads (must divide embed)")
    landmarks: int = Field(default=4, gt=0, description="Nystrom landmarks (must divide H*W)")
    tokens: Literal["spatial", "channel_runs"] = Field(default="spatial", description=(
        "spatial: tokens are pixels (the paper); channel_runs: the DenseFlow code's layout"))


@net_layer
class _NystromDef(NetLayerDef):
    name, data, Args = "nystrom_attention", IMAGE, _NystromArgs
    summary = ("DenseFlow's Nystrom self-attention: 1x1 c -> 3E, K1 pinv(K2) (K3 V) + V, 1x1 E -> c "
               "(Xiong et al. 2021, eq. 14-16)")

    def describe(self, a, c, io):
        e = a.embed or c // 2
        if e == 0 or e % a.heads:
            raise NetLayerError(f"net layer 'nystrom_attention': embed {e} must be positive and divisible by "
                                f"{a.heads} heads")
        if io.positions % a.landmarks:
            raise NetLayerError(f"net layer 'nystrom_attention': {io.h}x{io.w} = {io.positions} positions are not "
                                f"divisible by {a.landmarks} landmarks")
        return NystromAttention.of(c, e, a.heads, a.landmarks, io.positions, tokens=a.tokens), c


BLOCK_LAYERS = ("residual", "resblock", "gated_conv", "gated_conv1x1", "dense_block", "attention",
                "nystrom_attention")
