"""Conditioner nets (the ``net`` ops of :mod:`augflow_dsl.ops.net_ops`) and shared blocks.

Every net is built by ``from_op(args, io)`` from its op's description (``op.describe(args,
io)``, a tree of :mod:`augflow_dsl.ops.net_descriptions`): the constructor builds its children from
it (:func:`~.instantiate.build_children`); only the forward wiring is written here, and a net that
is its description alone is a :class:`DescribedNet` with a docstring.
``forward(x, context=None)`` returns [N, io.c_out, io.h, io.w] ([N, io.c_out] for the MLP).
The last layer is zero-initialised (weight and bias) so that the coupling it serves starts at
the identity. Parameter and MAC counts are the description's (see tests/test_nets.py).

Shared blocks, built from their descriptions and reused by :mod:`augflow_dsl.layers.contexts`:
:class:`GatedResNet` (Flow++ gated conv), :class:`GatedAttention`, :class:`DenseBlock`
(DenseFlow dense block with gated output), :class:`NystromAttention`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import net_descriptions as nl
from ..ops import net_ops as op_defs
from .base import NetModule
from .instantiate import build, build_children, builds
from .dense_kernel import DenseBlockFunction, dense_block_inference
from .modules import ChannelLayerNorm, DataInitConv2d, Dropout, GemmConv2d, concat_elu
from .registry import implements, op_of

__all__ = [
    "GemmConv2d", "DataInitConv2d", "Dropout", "concat_elu", "ConcatELU", "GatedResNet", "ChannelLayerNorm",
    "ResBlock", "DenseLayer", "DenseBlock",
    "GatedConv1x1", "NystromAttention", "GatedAttention",
    "DescribedNet", "MLP", "GlowNet", "ResNet", "ConvAttention", "DenseAttention", "Dense", "CrossUnitNet",
]


# ----------------------------------------------------------------------------------------
# shared blocks
# ----------------------------------------------------------------------------------------

class ConcatELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return concat_elu(x)


def _glu(h: torch.Tensor) -> torch.Tensor:
    """Gate of Flow++ (Sec. 3.3): first half the value, second half the gate."""
    a, g = h.chunk(2, dim=1)
    return a * torch.sigmoid(g)


@builds(nl.GatedResNet)
class GatedResNet(nn.Module):
    """Flow++ gated conv (Ho et al. 2019, Sec. 3.3): x + GLU(conv2(drop(concat_elu(
    conv3x3(concat_elu(x)) [+ 1x1(concat_elu(ctx))])))), conv2 1x1 (``nin``) or 3x3
    (:class:`~augflow_dsl.ops.net_descriptions.GatedResNet`)."""

    def __init__(self, d: nl.GatedResNet):
        super().__init__()
        self.ctx = None
        build_children(self, d)

    def forward(self, x: torch.Tensor, ctx_elu: torch.Tensor | None = None) -> torch.Tensor:
        """``ctx_elu`` is concat_elu(context), computed once by the caller."""
        h = self.conv1(concat_elu(x))
        if self.ctx is not None:
            if ctx_elu is None:
                raise ValueError("this gated conv was built with a context; none was given")
            h = h + self.ctx(ctx_elu)
        h = self.conv2(self.drop(concat_elu(h)))
        return x + _glu(h)


@builds(nl.DenseLayer)
class DenseLayer(nn.Module):
    """DenseFlow dense layer (Grcic et al. 2021, Sec. 2.4): cat(x, ReLU(3x3(ReLU(1x1(x))))).
    Runs in channels-last memory: the 1x1 conv is a :class:`GemmConv2d`, and the 3x3 weight is
    kept channels-last like its input, so no conv re-lays it out per call."""

    def __init__(self, d: nl.DenseLayer):
        super().__init__()
        conv1, relu1, conv3, relu3 = d.net.layers
        first = build(conv3)  # drawn before the 1x1, as always: a seed gives the initial weights it gave
        self.net = nn.Sequential(build(conv1), build(relu1), first, build(relu3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.net(x)], dim=1)


@builds(nl.GatedConv1x1)
class GatedConv1x1(nn.Module):
    """1x1 conv c -> 3*out, output a + b*sigmoid(c) (DenseFlow's gated conv)."""

    def __init__(self, d: nl.GatedConv1x1):
        super().__init__()
        build_children(self, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = self.conv(x).chunk(3, dim=1)
        return a + b * torch.sigmoid(c)


@builds(nl.DenseBlock)
class DenseBlock(nn.Module):
    """``depth`` dense layers (inputs c0, c0+g, ...), then a gated 1x1 (c0 + depth*g) -> out;
    ``residual`` adds the input (:class:`~augflow_dsl.ops.net_descriptions.DenseBlock`). In eager float32
    the block runs on one buffer (:mod:`.dense_kernel`; see :meth:`_path`)."""

    def __init__(self, d: nl.DenseBlock):
        super().__init__()
        build_children(self, d)
        self.residual = d.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        path = self._path(x)
        if path != "autograd":
            params = [p for layer in self.layers for p in (layer.net[0].weight, layer.net[0].bias,
                                                          layer.net[2].weight, layer.net[2].bias)]
            params += [self.gate.conv.weight, self.gate.conv.bias]
            if path == "inference":
                return dense_block_inference(x, self.residual, params)
            return DenseBlockFunction.apply(x, self.residual, *params)
        y = self.gate(self.layers(x))
        return x + y if self.residual else y

    @staticmethod
    def _path(x: torch.Tensor) -> str:
        """Eager float32 runs the buffer kernel (:mod:`.dense_kernel`): with its hand-written
        backward when gradients are on, without autograd under ``no_grad`` (sampling,
        evaluation); autocast and torch.compile take the autograd path."""
        if torch.is_autocast_enabled(x.device.type) or torch.compiler.is_compiling():
            return "autograd"
        return "kernel" if torch.is_grad_enabled() else "inference"


def _pinv_newton_schulz(k: torch.Tensor, iters: int = 6) -> torch.Tensor:
    """Moore-Penrose pseudo-inverse of the last two dims by the iteration of Nystromformer
    (Xiong et al. 2021, eq. 16): Z0 = K^T / (||K||_1 ||K||_inf) per matrix,
    Z <- Z (13I - KZ (15I - KZ (7I - KZ))) / 4."""
    a = k.abs()
    norm1 = a.sum(dim=-2).amax(dim=-1, keepdim=True)    # max column sum
    norm_inf = a.sum(dim=-1).amax(dim=-1, keepdim=True)  # max row sum
    z = k.transpose(-1, -2) / (norm1 * norm_inf).unsqueeze(-1)
    eye = torch.eye(k.shape[-1], dtype=k.dtype, device=k.device)
    for _ in range(iters):
        kz = k @ z
        z = 0.25 * z @ (13 * eye - kz @ (15 * eye - kz @ (7 * eye - kz)))
    return z


@builds(nl.NystromAttention)
class NystromAttention(nn.Module):
    """Nystrom self-attention (Xiong et al. 2021, eq. 14-16; DenseFlow Sec. 2.4): qkv 1x1 C -> 3E,
    heads split E into contiguous runs, landmarks = means of ``landmarks`` contiguous token
    segments, K1 pinv(K2) (K3 V) + V, merged heads, 1x1 E -> C.

    ``tokens``:

    * ``spatial`` (the paper): tokens are pixels, features their channels; q scaled by
      1/sqrt(d); softmax over keys (dim -1).
    * ``channel_runs`` (the DenseFlow code, blocks/attention.py:36-82): the NCHW qkv output is
      reshaped to (N, HW, 3E) without a permute, so token t holds the flat NCHW values
      [3E t, 3E (t+1)) -- runs of one channel's pixels; q, k, v are the three thirds of each
      token; the landmark means are divided by sqrt(HW) (q and k are not scaled); every softmax
      runs over dim -2; the output (N, HW, E) is reshaped to (N, E, H, W) without a permute.

    Both have the same parameters (the two 1x1 convs)."""

    def __init__(self, d: nl.NystromAttention):
        super().__init__()
        if d.embed % d.heads:
            raise ValueError(f"embed {d.embed} is not divisible by heads {d.heads}")
        if d.tokens not in ("spatial", "channel_runs"):
            raise ValueError(f"tokens must be 'spatial' or 'channel_runs'; got {d.tokens!r}")
        self.e, self.heads, self.m, self.iters, self.tokens = d.embed, d.heads, d.landmarks, d.iters, d.tokens
        build_children(self, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_, _, h, w = x.shape
        n, m = h * w, self.m
        if n % m:
            raise ValueError(f"{h}x{w} = {n} positions are not divisible by {m} landmarks")
        if self.tokens == "channel_runs":
            return self._channel_runs(x)
        hd = self.heads
        d = self.e // hd
        # channels-last: [N, H, W, 3E] viewed as [N, n, 3, heads, d] without a copy; unbinding
        # dim 2 makes the backward one stack straight into that layout
        t = self.qkv(x).permute(0, 2, 3, 1).reshape(n_, n, 3, hd, d)
        q, k, v = (u.transpose(1, 2) for u in t.unbind(2))  # N, heads, n, d
        q = q * d ** -0.5
        q_l = q.reshape(n_, hd, m, n // m, d).mean(dim=-2)
        k_l = k.reshape(n_, hd, m, n // m, d).mean(dim=-2)
        y = self._nystrom(q, k, v, q_l, k_l, -1)
        y = y.transpose(1, 2).reshape(n_, h, w, self.e).permute(0, 3, 1, 2)  # channel = head*d + i
        return self.out(y)

    def _channel_runs(self, x: torch.Tensor) -> torch.Tensor:
        n_, _, h, w = x.shape
        n, m, hd = h * w, self.m, self.heads
        d = self.e // hd
        t = self.qkv(x).contiguous().reshape(n_, n, 3 * self.e)  # NCHW order read as tokens
        q, k, v = (u.unflatten(-1, (hd, d)).transpose(1, 2) for u in t.chunk(3, dim=-1))  # N, heads, n, d
        q_l = q.reshape(n_, hd, m, n // m, d).mean(dim=-2) / n ** 0.5
        k_l = k.reshape(n_, hd, m, n // m, d).mean(dim=-2) / n ** 0.5
        y = self._nystrom(q, k, v, q_l, k_l, -2)
        y = y.transpose(1, 2).reshape(n_, n, self.e).reshape(n_, self.e, h, w)
        return self.out(y)

    def _nystrom(self, q, k, v, q_l, k_l, dim: int) -> torch.Tensor:
        """softmax(q k~^T) pinv(softmax(q~ k~^T)) softmax(q~ k^T) v + v, softmaxes over ``dim``."""
        k1 = torch.softmax(q @ k_l.transpose(-1, -2), dim=dim)    # n x m
        k2 = torch.softmax(q_l @ k_l.transpose(-1, -2), dim=dim)  # m x m
        k3 = torch.softmax(q_l @ k.transpose(-1, -2), dim=dim)    # m x n
        return (k1 @ _pinv_newton_schulz(k2, self.iters)) @ (k3 @ v) + v


@builds(nl.GatedAttention)
class GatedAttention(nn.Module):
    """Flow++ gated self-attention (Ho et al. 2019, Sec. 3.3): x + GLU(1x1 F->2F(drop(
    MHA(1x1 F->3F(x + pos))))), Q, K, V consecutive F-channel blocks, heads contiguous."""

    def __init__(self, d: nl.GatedAttention):
        super().__init__()
        self.f, self.heads = d.qkv.c_in, d.heads
        build_children(self, d)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        n_, f, h, w = x.shape
        d = f // self.heads
        t = self.qkv(x if pos is None else x + pos)  # channels-last: views below, no copies
        t = t.permute(0, 2, 3, 1).reshape(n_, h * w, 3, self.heads, d)
        a = F.scaled_dot_product_attention(*(u.transpose(1, 2) for u in t.unbind(2)))  # N, heads, hw, d
        a = a.transpose(1, 2).reshape(n_, h, w, f).permute(0, 3, 1, 2)  # channel = head*d + i
        return x + _glu(self.proj(self.drop(a)))


def _describe(layer_cls, args, io) -> nl.Net:
    """The description of the net ``layer_cls`` implements, after its op's shape check."""
    op = op_of(layer_cls)
    op.check_io(args, io)
    return op.describe(args, io)


def _with_context(x: torch.Tensor, context: torch.Tensor | None, channels: int) -> torch.Tensor:
    if channels == 0:
        if context is not None:
            raise ValueError("this net was built without a context; got one")
        return x
    if context is None:
        raise ValueError(f"this net reads a context of {channels} channels; none was given")
    return torch.cat([x, context], dim=1)


# ----------------------------------------------------------------------------------------
# nets
# ----------------------------------------------------------------------------------------

class DescribedNet(NetModule):
    """A conditioner net that is its op's description and nothing more: ``from_op`` builds the
    children of ``op.describe(args, io)`` (after ``op.check_io``), ``forward`` runs the child
    ``net`` on cat(x, context). A net op whose module is just that subclasses this with its
    docstring and ``@implements``; one with its own wiring overrides ``forward``."""

    def __init__(self, d: nl.Net, context: int = 0):
        super().__init__()
        self.context = context
        build_children(self, d)

    @classmethod
    def from_op(cls, args, io):
        return cls(_describe(cls, args, io), io.context)

    def forward(self, x, context=None):
        return self.net(_with_context(x, context, self.context))


@implements(op_defs.MLP)
class MLP(DescribedNet):
    """Fully connected net for vectors (VFlow Sec. 5): [Linear, ReLU] x ``layers`` of
    ``hidden`` units on cat(x, context), zero-initialised Linear -> c_out."""


@implements(op_defs.GlowNet)
class GlowNet(DescribedNet):
    """Glow coupling net (Kingma & Dhariwal 2018, Sec. 3.3): 3x3 -> ReLU -> 1x1 -> ReLU ->
    zero-initialised 3x3, on cat(x, context)."""


@builds(nl.ResBlock)
class ResBlock(nn.Module):
    """RealNVP residual block: ReLU(x + BN(3x3(ReLU(BN(3x3(x))))))."""

    def __init__(self, d: nl.ResBlock):
        super().__init__()
        build_children(self, d)

    def forward(self, x):
        return F.relu(x + self.body(x))


@implements(op_defs.ResNet)
class ResNet(DescribedNet):
    """RealNVP coupling net (Dinh et al. 2017, Sec. 4.1): 3x3 conv (c_in + context) -> F,
    ReLU, ``blocks`` residual blocks with batch norm, zero-initialised 3x3 conv F -> c_out."""


@implements(op_defs.ConvAttention)
class ConvAttention(DescribedNet):
    """Flow++ conditioning net (Ho et al. 2019, Sec. 3.3; flows.py:488-498): 3x3 conv c_in -> F;
    ``blocks`` x [gated conv (+ context), layer norm, gated attention (x + pos), layer norm];
    zero-initialised 3x3 conv F -> c_out. Inner convs use the reference's data-dependent init
    (:class:`DataInitConv2d`); the last one starts at zero (the reference starts it at std 0.1) so
    that the coupling starts at the identity. The context (same h x w) enters every gated conv as
    1x1(concat_elu(context)); the learned position embedding [F, h, w] only the attention."""

    def __init__(self, d: nl.Net, context: int = 0):
        NetModule.__init__(self)
        self.context = context
        self.pos = None  # position: none
        build_children(self, d)

    def forward(self, x, context=None):
        if self.context:
            if context is None:
                raise ValueError(f"this net reads a context of {self.context} channels; none was given")
            ctx = concat_elu(context.contiguous(memory_format=torch.channels_last))
        else:
            if context is not None:
                raise ValueError("this net was built without a context; got one")
            ctx = None
        # channels-last throughout: 1x1 convs are GEMMs, layer norms and attention read views
        h = self.proj_in(x.contiguous(memory_format=torch.channels_last))
        for conv, norm1, attn, norm2 in self.blocks:
            h = norm1(conv(h, ctx))
            h = norm2(attn(h, self.pos))
        return self.proj_out(h).contiguous()


@implements(op_defs.DenseAttention)
class DenseAttention(DescribedNet):
    """DenseFlow intra-module coupling net (Grcic et al. 2021, Sec. 2.4, Fig. 3): 1x1 conv
    (c_in + context) -> P; Nystrom attention and a dense block side by side on it;
    cat -> BatchNorm -> ReLU -> 1x1 2P -> P (no bias); zero-initialised 1x1 P -> c_out.
    ``tokens`` picks the attention's token layout (:class:`NystromAttention`)."""

    def forward(self, x, context=None):
        h = self.proj_in(_with_context(x, context, self.context))
        h = self.fuse(torch.cat([self.attn(h), self.dense(h)], dim=1))
        return self.proj_out(h).contiguous()


@implements(op_defs.Dense)
class Dense(DescribedNet):
    """DenseFlow's dequantizer coupling net (Grcic et al. 2021, App. B; dequantization.py:11-39):
    1x1 conv (c_in + context) -> mid, dense block mid -> mid (gated, + its input when
    ``residual``), zero-initialised 1x1 conv mid -> c_out."""

    def forward(self, x, context=None):
        return super().forward(x, context).contiguous()


@implements(op_defs.CrossUnitNet)
class CrossUnitNet(DescribedNet):
    """DenseFlow cross-unit g-network (Grcic et al. 2021, eq. 6; flow_modules.py:31-44):
    3x3 conv c_in -> expansion*c_in, ReLU, zero-initialised 1x1 conv -> c_out. No context."""

    @classmethod
    def from_op(cls, args, io):
        if io.context:
            raise ValueError("cross_unit_net takes no context")
        return super().from_op(args, io)
