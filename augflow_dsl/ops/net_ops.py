"""Conditioner nets: what computes a coupling's (or a g-network's) parameters.

Each net maps ``io.c_in`` channels (plus ``io.context`` context channels where the net
supports one) to ``io.c_out`` channels at ``io.h`` x ``io.w``; its last layer starts at
zero so that the coupling it serves starts at the identity. Each is described once, by
``describe(args, io)`` (a tree of :mod:`.net_descriptions`): its parameter and MAC counts and its
torch module (:mod:`augflow_dsl.layers.net_modules`) all derive from that description.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from .net_descriptions import (Act, Activation, BatchNorm, Conv, DenseBlock, GatedAttention, GatedResNet, Kept, LayerList,
                        LayerNorm, Linear, Net, NystromAttention, Parameter, Precision, ResBlock, Sequential, chain)
from .registry import NetOp, OpArgs, OpShapeError, register


def _image(io, name):
    if io.h == 0:
        raise OpShapeError(f"{name} is a convolutional net and needs image data; got a vector")


@register
class MLP(NetOp):
    """Fully connected net for vector data: Linear -> ReLU, ``layers`` hidden layers of
    ``hidden`` units, zero-initialised output layer (VFlow Sec. 5: 2 hidden layers x 50)."""

    summary = "fully connected coupling net for vector data"
    equation = "VFlow (Chen et al. 2020) Sec. 5 (2 hidden layers of 50)"
    shape_rule = "vector data only: (in + context) features -> hidden -> ... -> out features"

    name = "mlp"

    class Args(OpArgs):
        hidden: int = Field(gt=0, description="units per hidden layer")
        layers: int = Field(default=2, gt=0, description="number of hidden layers")

    def check_io(self, a, io):
        if io.h != 0:
            raise OpShapeError("mlp needs vector data; use a convolutional net for images")

    def describe(self, a, io):
        layers, c = [], io.c_in + io.context
        for _ in range(a.layers):
            layers += [Linear(c, a.hidden), Activation()]
            c = a.hidden
        return Net((("net", Sequential((*layers, Linear(c, io.c_out, init="zero")))),))


@register
class GlowNet(NetOp):
    """Glow's coupling net (Kingma & Dhariwal 2018, Sec. 3.3): 3x3 conv -> ReLU -> 1x1 conv
    -> ReLU -> zero-initialised 3x3 conv, ``filters`` wide, biases throughout."""

    summary = "Glow's coupling net: 3x3 conv, 1x1 conv, zero-initialised 3x3 conv"
    equation = "Glow (Kingma & Dhariwal 2018) Sec. 3.3"
    shape_rule = "images only: (in + context) x H x W -> filters -> out x H x W"

    name = "glow_net"

    class Args(OpArgs):
        filters: int = Field(gt=0, description="width of the hidden convolutions")

    def check_io(self, a, io):
        _image(io, self.name)

    def describe(self, a, io):
        f, n = a.filters, io.positions
        return Net((("net", Sequential((
            Conv(io.c_in + io.context, f, 3, n), Activation(),
            Conv(f, f, 1, n), Activation(),
            Conv(f, io.c_out, 3, n, init="zero")))),))


@register
class ResNet(NetOp):
    """RealNVP's residual coupling net (Dinh et al. 2017, Sec. 4.1): 3x3 conv in -> F, ``blocks``
    residual blocks [3x3 conv -> BatchNorm -> ReLU -> 3x3 conv -> BatchNorm, + x, ReLU],
    zero-initialised 3x3 conv F -> out."""

    summary = "RealNVP's residual coupling net"
    equation = "RealNVP (Dinh et al. 2017) Sec. 4.1"
    shape_rule = "images only: (in + context) x H x W -> filters -> out x H x W"

    name = "resnet"

    class Args(OpArgs):
        filters: int = Field(gt=0, description="width of the residual blocks")
        blocks: int = Field(default=8, ge=0, description="number of residual blocks")

    def check_io(self, a, io):
        _image(io, self.name)

    def describe(self, a, io):
        f, n = a.filters, io.positions
        return Net((("net", Sequential((
            Conv(io.c_in + io.context, f, 3, n), Activation(),
            *(ResBlock.of(f, n) for _ in range(a.blocks)),
            Conv(f, io.c_out, 3, n, init="zero")))),))


@register
class ConvAttention(NetOp):
    """Flow++ conditioning net (flows.py:488-498): learned position embedding [F, H, W]; 3x3 conv
    C -> F; ``blocks`` x [gated conv (+ context), layer norm, gated multi-head self-attention
    over positions (x + pos -> 1x1 F -> 3F -> softmax(QK^T/sqrt(d))V -> dropout -> 1x1 F -> 2F
    -> GLU, residual), layer norm]; 3x3 conv F -> out. One block: 27F^2 + 12F parameters
    (+ 2*context*F + F with a context). The reference's data-dependent init of the convs adds no
    parameters; here the last conv starts at zero instead (the reference starts it at std 0.1)."""

    summary = "Flow++ coupling net: gated convs and multi-head self-attention"
    equation = "Flow++ (Ho et al. 2019) Sec. 3.3; flowpp flows.py:488-498"
    shape_rule = "images only: in x H x W -> filters -> out x H x W; filters divisible by heads"

    name = "conv_attention"

    class Args(OpArgs):
        filters: int = Field(gt=0, description="width F of the convolutions and attention")
        blocks: int = Field(default=10, ge=0, description="number of [gated conv, norm, attention, norm] blocks")
        heads: int = Field(default=4, gt=0, description="attention heads (must divide filters)")
        dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description=(
            "dropout rate inside the gated convs and attention"))
        position: Literal["learned", "none"] = Field(default="learned", description=(
            "learned: an F x H x W position embedding added before attention; none: no embedding"))

    def check_io(self, a, io):
        _image(io, self.name)
        if a.filters % a.heads:
            raise OpShapeError(f"filters {a.filters} are not divisible by heads {a.heads}")

    def describe(self, a, io):
        f, n = a.filters, io.positions
        block = LayerList((GatedResNet.of(f, n, io.context, nin=True, dropout=a.dropout), LayerNorm(f),
                           GatedAttention.of(f, a.heads, n, a.dropout), LayerNorm(f)))
        pos = (("pos", Parameter((f, io.h, io.w), std=0.01)),) if a.position == "learned" else ()
        return Net((*pos,
                    ("proj_in", Conv(io.c_in, f, 3, n, init="data")),
                    ("blocks", LayerList((block,) * a.blocks)),
                    ("proj_out", Conv(f, io.c_out, 3, n, init="zero"))))

    def net_memory(self, a, io, p: Precision) -> Kept:
        """x.contiguous(channels_last) is a copy, which proj_in keeps; concat_elu(context), computed
        once, keeps its two exponentials and its output, which every block's context conv keeps;
        then the blocks (the attention reads x + pos with a learned embedding) and proj_out."""
        d = self.describe(a, io)
        parts = dict(d.parts)
        n = io.positions
        x = Act(io.c_in * n, p.flow, True)
        own = 0
        if io.context:
            own += 4 * io.context * n * p.flow  # the context is float32: so are its exponentials
        layers = []
        for conv, norm1, attn, norm2 in (blk.layers for blk in parts["blocks"].layers):
            layers += [conv, norm1, _WithPosition(attn, a.position == "learned"), norm2]
        k = chain(x, [parts["proj_in"], *layers, parts["proj_out"]], p)
        return Kept(k.out, own=own + k.own + (x.bytes if k.input else 0), fixed=k.fixed)


@register
class DenseAttention(NetOp):
    """DenseFlow intra-module coupling net (Sec. 2.4, densenet.py:81-112): 1x1 conv C -> P; a
    dense block (``depth`` layers, growth ``growth``, gated 1x1 to P) and Nystrom self-attention
    (embed P/2, ``landmarks`` landmarks, qkv 1x1 P -> 3E, out 1x1 E -> P, + v) side by side,
    fused by cat -> BatchNorm -> ReLU -> 1x1 2P -> P (no bias); zero-initialised 1x1 P -> out.
    Parameters 1,568,840 + 73C for P 48, depth 7, growth 64. ``tokens: spatial`` (default)
    attends over spatial positions as the paper describes; ``tokens: channel_runs`` is the
    reference code's layout (blocks/attention.py:36-82: NCHW reshaped to (N, HW, 3E) without a
    permute, so tokens are runs of one channel's pixels; landmark means / sqrt(HW); softmax over
    dim -2), which importing the authors' weights needs. Same parameters either way."""

    summary = "DenseFlow coupling net: dense block and Nystrom attention, fused"
    equation = "DenseFlow (Grcic et al. 2021) Sec. 2.4; DenseFlow densenet.py:81-112"
    shape_rule = ("images only: (in + context) x H x W -> project -> out x H x W; embed divisible by heads; H*W "
                  "divisible by landmarks")

    name = "dense_attention"

    class Args(OpArgs):
        project: int = Field(gt=0, description="channels P of the 1x1 input projection")
        depth: int = Field(default=7, gt=0, description="layers of the dense block")
        growth: int = Field(default=64, gt=0, description="channels each dense layer adds")
        heads: int = Field(default=1, gt=0, description="attention heads (must divide embed)")
        landmarks: int = Field(default=4, gt=0, description="Nystrom landmarks (must divide H*W)")
        embed: int | None = Field(default=None, description="attention embedding width; none: project / 2")
        tokens: Literal["spatial", "channel_runs"] = Field(
            default="spatial", description="spatial: tokens are pixels (the paper); channel_runs: the DenseFlow "
                                           "code's reshape without a permute (runs of one channel), for its weights")

    def _e(self, a):
        return a.embed if a.embed is not None else a.project // 2

    def check_io(self, a, io):
        _image(io, self.name)
        e = self._e(a)
        if e <= 0 or e % a.heads:
            raise OpShapeError(f"attention embed {e} must be positive and divisible by heads {a.heads}")
        if (io.h * io.w) % a.landmarks:
            raise OpShapeError(f"{io.h}x{io.w} = {io.h * io.w} positions are not divisible by "
                               f"{a.landmarks} landmarks")

    def describe(self, a, io):
        p, n = a.project, io.positions
        return Net((
            ("proj_in", Conv(io.c_in + io.context, p, 1, n, channels_last=True)),
            ("attn", NystromAttention.of(p, self._e(a), a.heads, a.landmarks, n, tokens=a.tokens)),
            ("dense", DenseBlock.of(p, a.depth, a.growth, p, n)),
            ("fuse", Sequential((BatchNorm(2 * p), Activation(),
                                 Conv(2 * p, p, 1, n, bias=False, channels_last=True)))),
            ("proj_out", Conv(p, io.c_out, 1, n, init="zero", channels_last=True))))

    def net_memory(self, a, io, p: Precision) -> Kept:
        """proj_in on x (or cat(x, context)); attention and dense block side by side on its output
        (kept once if either keeps it); cat of their outputs (new), then fuse and proj_out."""
        parts = dict(self.describe(a, io).parts)
        x = Act((io.c_in + io.context) * io.positions, p.flow)
        k_in = parts["proj_in"].kept(x, p)
        own, fixed = k_in.own + (x.bytes if k_in.input and io.context else 0), k_in.fixed
        h = k_in.out
        att, dense = parts["attn"].kept(h, p), parts["dense"].kept(h, p)
        own, fixed = own + att.own + dense.own, fixed + att.fixed + dense.fixed
        if att.input or dense.input or k_in.output:
            own += h.bytes
        cat = Act(att.out.n + dense.out.n, att.out.b, att.out.cl and dense.out.cl)
        k = chain(cat, (parts["fuse"], parts["proj_out"]), p)
        own, fixed = own + k.own + (cat.bytes if k.input else 0), fixed + k.fixed
        return Kept(k.out, own=own, input=k_in.input and not io.context, fixed=fixed)


@register
class Dense(NetOp):
    """DenseFlow's conditional coupling net of the dequantizer (dequantization.py:11-39): 1x1
    conv (C + context) -> mid, a dense block (``depth`` layers, growth ``growth``, gated) with a
    residual around it, zero-initialised 1x1 conv mid -> out."""

    summary = "DenseFlow's conditional coupling net of the dequantizer: a residual dense block"
    equation = "DenseFlow (Grcic et al. 2021) Sec. 3; DenseFlow dequantization.py:11-39"
    shape_rule = "images only: (in + context) x H x W -> mid -> out x H x W"

    name = "dense"

    class Args(OpArgs):
        mid: int = Field(gt=0, description="channels of the 1x1 projection and of the dense block's output")
        depth: int = Field(default=4, gt=0, description="layers of the dense block")
        growth: int = Field(default=64, gt=0, description="channels each dense layer adds")
        residual: bool = Field(default=True, description="add the projection's output back after the dense block")

    def check_io(self, a, io):
        _image(io, self.name)

    def describe(self, a, io):
        n = io.positions
        return Net((("net", Sequential((
            Conv(io.c_in + io.context, a.mid, 1, n, channels_last=True),
            DenseBlock.of(a.mid, a.depth, a.growth, a.mid, n, residual=a.residual),
            Conv(a.mid, io.c_out, 1, n, init="zero", channels_last=True)))),))


@register
class CrossUnitNet(NetOp):
    """DenseFlow's g-network (flow_modules.py:31-44): 3x3 conv Cin -> expansion*Cin -> ReLU ->
    zero-initialised 1x1 conv -> 2*growth (mu, then the raw log-scale)."""

    summary = "DenseFlow's g-network of a cross-unit coupling"
    equation = "DenseFlow (Grcic et al. 2021) eq. 7; DenseFlow flow_modules.py:31-44"
    shape_rule = "images only: in x H x W -> expansion * in -> 2 growth x H x W"

    name = "cross_unit_net"

    class Args(OpArgs):
        expansion: int = Field(default=4, gt=0, description="hidden channels as a multiple of the input channels")

    def check_io(self, a, io):
        _image(io, self.name)
        if io.context:  # layers/net_modules.py CrossUnitNet has no context input
            raise OpShapeError(f"cross_unit_net reads no context, but this coupling's q hands it {io.context} "
                               f"context channels; use a net that reads one (glow_net, resnet, conv_attention, "
                               f"dense, dense_attention)")

    def describe(self, a, io):
        hid, n = a.expansion * io.c_in, io.positions
        return Net((("net", Sequential((
            Conv(io.c_in, hid, 3, n), Activation(),
            Conv(hid, io.c_out, 1, n, init="zero")))),))


@dataclass(frozen=True)
class _WithPosition:
    """A gated attention in ConvAttention's chain: it reads x + pos when the net learns a position
    embedding."""

    attn: GatedAttention
    pos: bool

    def kept(self, x: Act, p: Precision) -> Kept:
        return self.attn.kept(x, p, pos=self.pos)
