"""Conditioner nets (the ``net`` ops of :mod:`augflow_dsl.ops.nets`) and shared blocks.

Every net is built by ``from_op(args, io)`` from the op's validated arguments and a
:class:`~augflow_dsl.ops.registry.NetIO`; ``forward(x, context=None)`` returns
[N, io.c_out, io.h, io.w] ([N, io.c_out] for the MLP). The last layer is zero-initialised
(weight and bias) so that the coupling it serves starts at the identity. Parameter and MAC
counts match the op's ``net_params`` / ``net_macs`` (see tests/test_nets.py).

Shared blocks, reused by :mod:`augflow_dsl.layers.contexts`: :func:`concat_elu`,
:class:`GatedResNet` (Flow++ gated conv), :class:`ChannelLayerNorm`, :class:`DenseBlock`
(DenseFlow dense block with gated output), :class:`NystromAttention`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import registry
from .base import InitOnce, NetModule, zero_init
from .dense_kernel import DenseBlockFunction

__all__ = [
    "GemmConv2d", "Dropout", "concat_elu", "ConcatELU", "GatedResNet", "ChannelLayerNorm",
    "DenseLayer", "DenseBlock",
    "GatedConv1x1", "NystromAttention", "GatedAttention",
    "MLP", "GlowNet", "ResNet", "ConvAttention", "DenseAttention", "Dense", "CrossUnitNet",
]


# ----------------------------------------------------------------------------------------
# shared blocks
# ----------------------------------------------------------------------------------------

class GemmConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose 1x1 case runs as one GEMM over all N*H*W positions (``F.linear`` on
    the channels-last view) and returns [N, O, H, W] in channels-last memory. When the input is
    already channels-last the view costs no copy, so a chain of 1x1 convs never changes layout.
    On a 2-core CPU, forward+backward at DenseFlow's sizes runs at 200-270 GFLOP/s this way
    against 115-210 for mkldnn's NCHW 1x1 conv (``examples/bench_layout.py``). Other kernels
    are plain ``nn.Conv2d``; parameters and state-dict keys are those of ``nn.Conv2d``. The
    channels-last nets (DenseFlow's and Flow++'s) build their convs from this class."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size != (1, 1) or self.stride != (1, 1) or self.groups != 1 or any(self.padding):
            return super().forward(x)
        w = self.weight
        y = F.linear(x.permute(0, 2, 3, 1), w.reshape(w.shape[0], w.shape[1]), self.bias)
        return y.permute(0, 3, 1, 2)


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """elu(cat(x, -x)) on channels (Flow++ / PixelCNN++): doubles the channel count."""
    return F.elu(torch.cat([x, -x], dim=1))


class DataInitConv2d(InitOnce, GemmConv2d):
    """A conv with the Flow++ code's data-dependent init (flows.py:26-66): on its first forward
    in training mode it rescales weight and bias so that this batch's output has zero mean and
    standard deviation ``init_scale`` per channel. A buffer records that it ran, so a reloaded
    model is not re-initialised; no parameters are added."""

    def __init__(self, *args, init_scale: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.init_scale = init_scale
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if self._needs_init():
            with torch.no_grad():
                mean = y.mean((0, 2, 3))
                std = y.var((0, 2, 3), unbiased=False).add(1e-8).sqrt()
                s = self.init_scale / std
                self.weight.mul_(s.view(-1, 1, 1, 1))
                self.bias.sub_(mean).mul_(s)
                self._mark_initialized()
            y = super().forward(x)
        return y


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the mask drawn as ``uniform >= p``: the same Bernoulli(1 - p) mask and
    1/(1 - p) scaling, but the CPU draws it in about 40% of ``bernoulli_``'s time (1.6 ms
    against 3.9 ms for Flow++'s 8x192x16x16 activations), which is 15% of a Flow++ training
    step. Other devices use ``F.dropout``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        keep = torch.rand_like(x) >= self.p
        return x * keep * (1.0 / (1.0 - self.p))


class ConcatELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return concat_elu(x)


def _glu(h: torch.Tensor) -> torch.Tensor:
    """Gate of Flow++ (Sec. 3.3): first half the value, second half the gate."""
    a, g = h.chunk(2, dim=1)
    return a * torch.sigmoid(g)


class GatedResNet(nn.Module):
    """Flow++ gated conv (Ho et al. 2019, Sec. 3.3): x + GLU(conv2(drop(concat_elu(
    conv3x3(concat_elu(x)) [+ 1x1(concat_elu(ctx))])))), conv2 1x1 (``nin``) or 3x3.
    Parameters: ``ops.blocks.gated_resnet_params(filters, context, nin)``."""

    def __init__(self, filters: int, context: int = 0, nin: bool = True, dropout: float = 0.0):
        super().__init__()
        f = filters
        self.conv1 = DataInitConv2d(2 * f, f, 3, padding=1)
        self.ctx = DataInitConv2d(2 * context, f, 1) if context else None
        self.drop = Dropout(dropout)
        k = 1 if nin else 3
        self.conv2 = DataInitConv2d(2 * f, 2 * f, k, padding=k // 2, init_scale=0.1)

    def forward(self, x: torch.Tensor, ctx_elu: torch.Tensor | None = None) -> torch.Tensor:
        """``ctx_elu`` is concat_elu(context), computed once by the caller."""
        h = self.conv1(concat_elu(x))
        if self.ctx is not None:
            if ctx_elu is None:
                raise ValueError("this gated conv was built with a context; none was given")
            h = h + self.ctx(ctx_elu)
        h = self.conv2(self.drop(concat_elu(h)))
        return x + _glu(h)


class ChannelLayerNorm(nn.Module):
    """Layer norm over the channel axis at each position (Flow++ code, biased variance,
    eps 1e-5, affine gain and bias per channel: 2C parameters)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DenseLayer(nn.Module):
    """DenseFlow dense layer (Grcic et al. 2021, Sec. 2.4): cat(x, ReLU(3x3(ReLU(1x1(x))))).
    Runs in channels-last memory (the 1x1 conv is a :class:`GemmConv2d`)."""

    def __init__(self, c: int, growth: int):
        super().__init__()
        # the 3x3 weight is kept channels-last like its input, so no conv re-lays it out per call
        conv3 = nn.Conv2d(c, growth, 3, padding=1).to(memory_format=torch.channels_last)
        self.net = nn.Sequential(GemmConv2d(c, c, 1), nn.ReLU(), conv3, nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.net(x)], dim=1)


class GatedConv1x1(nn.Module):
    """1x1 conv c -> 3*out, output a + b*sigmoid(c) (DenseFlow's gated conv)."""

    def __init__(self, c_in: int, out: int):
        super().__init__()
        self.conv = GemmConv2d(c_in, 3 * out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = self.conv(x).chunk(3, dim=1)
        return a + b * torch.sigmoid(c)


class DenseBlock(nn.Module):
    """``depth`` dense layers (inputs c0, c0+g, ...), then a gated 1x1 (c0 + depth*g) -> out;
    ``residual`` adds the input (needs c0 == out). Parameters:
    ``ops.blocks.dense_block_params(c0, depth, growth, out)``."""

    def __init__(self, c0: int, depth: int, growth: int, out: int, residual: bool = False):
        super().__init__()
        if residual and c0 != out:
            raise ValueError(f"a residual dense block needs c0 == out; got {c0} and {out}")
        self.layers = nn.Sequential(*[DenseLayer(c0 + i * growth, growth) for i in range(depth)])
        self.gate = GatedConv1x1(c0 + depth * growth, out)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._use_kernel(x):
            params = [p for layer in self.layers for p in (layer.net[0].weight, layer.net[0].bias,
                                                          layer.net[2].weight, layer.net[2].bias)]
            return DenseBlockFunction.apply(x, self.residual, *params, self.gate.conv.weight,
                                            self.gate.conv.bias)
        y = self.gate(self.layers(x))
        return x + y if self.residual else y

    @staticmethod
    def _use_kernel(x: torch.Tensor) -> bool:
        """The hand-written backward (:mod:`.dense_kernel`) serves eager training; inference,
        autocast and torch.compile take the autograd path."""
        return (torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type)
                and not torch.compiler.is_compiling())


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

    def __init__(self, channels: int, embed: int, heads: int = 1, landmarks: int = 4, iters: int = 6,
                 tokens: str = "spatial"):
        super().__init__()
        if embed % heads:
            raise ValueError(f"embed {embed} is not divisible by heads {heads}")
        if tokens not in ("spatial", "channel_runs"):
            raise ValueError(f"tokens must be 'spatial' or 'channel_runs'; got {tokens!r}")
        self.e, self.heads, self.m, self.iters, self.tokens = embed, heads, landmarks, iters, tokens
        self.qkv = GemmConv2d(channels, 3 * embed, 1)
        self.out = GemmConv2d(embed, channels, 1)

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


class GatedAttention(nn.Module):
    """Flow++ gated self-attention (Ho et al. 2019, Sec. 3.3): x + GLU(1x1 F->2F(drop(
    MHA(1x1 F->3F(x + pos))))), Q, K, V consecutive F-channel blocks, heads contiguous."""

    def __init__(self, filters: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.f, self.heads = filters, heads
        self.qkv = DataInitConv2d(filters, 3 * filters, 1)
        self.drop = Dropout(dropout)
        self.proj = DataInitConv2d(filters, 2 * filters, 1, init_scale=0.1)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        n_, f, h, w = x.shape
        d = f // self.heads
        t = self.qkv(x if pos is None else x + pos)  # channels-last: views below, no copies
        t = t.permute(0, 2, 3, 1).reshape(n_, h * w, 3, self.heads, d)
        a = F.scaled_dot_product_attention(*(u.transpose(1, 2) for u in t.unbind(2)))  # N, heads, hw, d
        a = a.transpose(1, 2).reshape(n_, h, w, f).permute(0, 3, 1, 2)  # channel = head*d + i
        return x + _glu(self.proj(self.drop(a)))


def _check(layer_cls, args, io) -> None:
    registry.op_of_layer(layer_cls).check_io(args, io)


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

class MLP(NetModule):
    """Fully connected net for vectors (VFlow Sec. 5): [Linear, ReLU] x ``layers`` of
    ``hidden`` units on cat(x, context), zero-initialised Linear -> c_out."""


    def __init__(self, c_in: int, c_out: int, hidden: int, layers: int = 2, context: int = 0):
        super().__init__()
        self.context = context
        mods, c = [], c_in + context
        for _ in range(layers):
            mods += [nn.Linear(c, hidden), nn.ReLU()]
            c = hidden
        mods.append(zero_init(nn.Linear(c, c_out)))
        self.net = nn.Sequential(*mods)

    @classmethod
    def from_op(cls, args, io):
        _check(cls, args, io)
        return cls(io.c_in, io.c_out, args.hidden, args.layers, io.context)

    def forward(self, x, context=None):
        return self.net(_with_context(x, context, self.context))


class GlowNet(NetModule):
    """Glow coupling net (Kingma & Dhariwal 2018, Sec. 3.3): 3x3 -> ReLU -> 1x1 -> ReLU ->
    zero-initialised 3x3, on cat(x, context)."""


    def __init__(self, c_in: int, c_out: int, filters: int, context: int = 0):
        super().__init__()
        self.context = context
        f = filters
        self.net = nn.Sequential(
            nn.Conv2d(c_in + context, f, 3, padding=1), nn.ReLU(),
            nn.Conv2d(f, f, 1), nn.ReLU(),
            zero_init(nn.Conv2d(f, c_out, 3, padding=1)))

    @classmethod
    def from_op(cls, args, io):
        _check(cls, args, io)
        return cls(io.c_in, io.c_out, args.filters, io.context)

    def forward(self, x, context=None):
        return self.net(_with_context(x, context, self.context))


class _ResBlock(nn.Module):
    """RealNVP residual block: ReLU(x + BN(3x3(ReLU(BN(3x3(x))))))."""

    def __init__(self, f: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(f, f, 3, padding=1), nn.BatchNorm2d(f), nn.ReLU(),
            nn.Conv2d(f, f, 3, padding=1), nn.BatchNorm2d(f))

    def forward(self, x):
        return F.relu(x + self.body(x))


class ResNet(NetModule):
    """RealNVP coupling net (Dinh et al. 2017, Sec. 4.1): 3x3 conv (c_in + context) -> F,
    ReLU, ``blocks`` residual blocks with batch norm, zero-initialised 3x3 conv F -> c_out."""


    def __init__(self, c_in: int, c_out: int, filters: int, blocks: int = 8, context: int = 0):
        super().__init__()
        self.context = context
        f = filters
        self.net = nn.Sequential(
            nn.Conv2d(c_in + context, f, 3, padding=1), nn.ReLU(),
            *[_ResBlock(f) for _ in range(blocks)],
            zero_init(nn.Conv2d(f, c_out, 3, padding=1)))

    @classmethod
    def from_op(cls, args, io):
        _check(cls, args, io)
        return cls(io.c_in, io.c_out, args.filters, args.blocks, io.context)

    def forward(self, x, context=None):
        return self.net(_with_context(x, context, self.context))


class ConvAttention(NetModule):
    """Flow++ conditioning net (Ho et al. 2019, Sec. 3.3; flows.py:488-498): 3x3 conv c_in -> F;
    ``blocks`` x [gated conv (+ context), layer norm, gated attention (x + pos), layer norm];
    zero-initialised 3x3 conv F -> c_out. Inner convs use the reference's data-dependent init
    (:class:`DataInitConv2d`); the last one starts at zero (the reference starts it at std 0.1) so
    that the coupling starts at the identity. The context (same h x w) enters every gated conv as
    1x1(concat_elu(context)); the learned position embedding [F, h, w] only the attention."""


    def __init__(self, c_in: int, c_out: int, h: int, w: int, filters: int, blocks: int = 10,
                 heads: int = 4, dropout: float = 0.0, position: str = "learned", context: int = 0):
        super().__init__()
        f = filters
        self.context = context
        if position == "learned":
            self.pos = nn.Parameter(torch.randn(f, h, w) * 0.01)
        else:
            self.pos = None
        self.proj_in = DataInitConv2d(c_in, f, 3, padding=1)
        self.blocks = nn.ModuleList()
        for _ in range(blocks):
            self.blocks.append(nn.ModuleList([
                GatedResNet(f, context, nin=True, dropout=dropout), ChannelLayerNorm(f),
                GatedAttention(f, heads, dropout), ChannelLayerNorm(f)]))
        self.proj_out = zero_init(nn.Conv2d(f, c_out, 3, padding=1))

    @classmethod
    def from_op(cls, args, io):
        _check(cls, args, io)
        return cls(io.c_in, io.c_out, io.h, io.w, args.filters, args.blocks, args.heads,
                   args.dropout, args.position, io.context)

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


class DenseAttention(NetModule):
    """DenseFlow intra-module coupling net (Grcic et al. 2021, Sec. 2.4, Fig. 3): 1x1 conv
    (c_in + context) -> P; Nystrom attention and a dense block side by side on it;
    cat -> BatchNorm -> ReLU -> 1x1 2P -> P (no bias); zero-initialised 1x1 P -> c_out.
    ``tokens`` picks the attention's token layout (:class:`NystromAttention`)."""


    def __init__(self, c_in: int, c_out: int, project: int, depth: int = 7, growth: int = 64,
                 heads: int = 1, landmarks: int = 4, embed: int | None = None, context: int = 0,
                 tokens: str = "spatial"):
        super().__init__()
        p = project
        e = embed if embed is not None else p // 2
        self.context = context
        self.proj_in = GemmConv2d(c_in + context, p, 1)
        self.attn = NystromAttention(p, e, heads, landmarks, tokens=tokens)
        self.dense = DenseBlock(p, depth, growth, p)
        self.fuse = nn.Sequential(nn.BatchNorm2d(2 * p), nn.ReLU(), GemmConv2d(2 * p, p, 1, bias=False))
        self.proj_out = zero_init(GemmConv2d(p, c_out, 1))

    @classmethod
    def from_op(cls, args, io):
        _check(cls, args, io)
        return cls(io.c_in, io.c_out, args.project, args.depth, args.growth, args.heads,
                   args.landmarks, args.embed, io.context, args.tokens)

    def forward(self, x, context=None):
        h = self.proj_in(_with_context(x, context, self.context))
        h = self.fuse(torch.cat([self.attn(h), self.dense(h)], dim=1))
        return self.proj_out(h).contiguous()


class Dense(NetModule):
    """DenseFlow's dequantizer coupling net (Grcic et al. 2021, App. B; dequantization.py:11-39):
    1x1 conv (c_in + context) -> mid, dense block mid -> mid (gated, + its input when
    ``residual``), zero-initialised 1x1 conv mid -> c_out."""


    def __init__(self, c_in: int, c_out: int, mid: int, depth: int = 4, growth: int = 64,
                 residual: bool = True, context: int = 0):
        super().__init__()
        self.context = context
        self.net = nn.Sequential(
            GemmConv2d(c_in + context, mid, 1),
            DenseBlock(mid, depth, growth, mid, residual=residual),
            zero_init(GemmConv2d(mid, c_out, 1)))

    @classmethod
    def from_op(cls, args, io):
        _check(cls, args, io)
        return cls(io.c_in, io.c_out, args.mid, args.depth, args.growth, args.residual, io.context)

    def forward(self, x, context=None):
        return self.net(_with_context(x, context, self.context)).contiguous()


class CrossUnitNet(NetModule):
    """DenseFlow cross-unit g-network (Grcic et al. 2021, eq. 6; flow_modules.py:31-44):
    3x3 conv c_in -> expansion*c_in, ReLU, zero-initialised 1x1 conv -> c_out. No context."""


    def __init__(self, c_in: int, c_out: int, expansion: int = 4):
        super().__init__()
        hid = expansion * c_in
        self.net = nn.Sequential(nn.Conv2d(c_in, hid, 3, padding=1), nn.ReLU(),
                                 zero_init(nn.Conv2d(hid, c_out, 1)))

    @classmethod
    def from_op(cls, args, io):
        _check(cls, args, io)
        if io.context:
            raise ValueError("cross_unit_net takes no context")
        return cls(io.c_in, io.c_out, args.expansion)

    def forward(self, x, context=None):
        return self.net(_with_context(x, context, 0))
