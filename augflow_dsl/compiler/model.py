"""Graph -> FlowModel: flat, ordered forward and inverse plans; no graph look-ups at run time.

Compilation walks the checked graph once: every data-path node becomes a torch layer (built
by its op's ``layer`` class), every conditioner node the net its owner calls, every q-network
a :class:`QNet`. The model chain becomes a list of :class:`Step` records (kind, layer index,
the earlier outputs a cross-unit g reads); ``forward`` and ``inverse`` loop over that list.

Log-likelihood terms (nats, per example):
* dequantization (Flow++ eq. 12): -D * bits * ln 2 - log r(u | x), u ~ r (uniform: r = 1);
* input augmentation (VFlow eq. 7): -log q(z | x~), z ~ q;
* cross-unit coupling (DenseFlow eq. 9): log|diag sigma| - log N(e);
* every bijection's log|det J|, every dropped part's and the final prior's log-density.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import SpecError
from ..graph.build import CONDITIONER, build, data_chain
from ..graph.check import check_graph
from ..layers.base import UsesNets
from ..ops.registry import AUGMENT, BIJECTION, CONTEXT, DEQUANTIZER, DROP, PRIOR, OpEnv
from ..spec.load import load
from ..spec.models import Spec

BIJ, DROP_STEP, CROSS = "bijection", "drop", "cross"


@dataclass(frozen=True)
class Step:
    kind: str
    reads: tuple[int, ...] = ()  # plan indices whose outputs a cross-unit g reads; -1 = the plan's input


@dataclass
class Latents:
    """What ``encode`` returns: the final latent and each dropped part, in plan order."""

    z: torch.Tensor
    dropped: list[torch.Tensor] = field(default_factory=list)


def build_layer(call, shape, env, nets: dict) -> nn.Module:
    """The torch layer of ``call`` on ``shape``; ``nets`` maps each conditioner slot to its
    (net call, NetIO)."""
    built = {slot: net.definition.layer_class().from_op(net.args, io) for slot, (net, io) in nets.items()}
    return call.definition.layer_class().from_op(call.args, tuple(shape), env, built)


def layer_for(call, shape, env=None) -> nn.Module:
    """One op's layer outside a graph, its nets sized by the op's own rules (tests, tools)."""
    env = env or OpEnv()
    return build_layer(call, shape, env, call.definition.nets(call.args, tuple(shape), env))


def _layer(g, node) -> nn.Module:
    """A graph node's layer, its nets read off the node's conditioner nodes (the graph is the IR)."""
    d = g.nodes[node]
    nets = {g.nodes[u]["slot"]: (g.nodes[u]["call"], g.nodes[u]["io"])
            for u, _, e in g.in_edges(node, data=True) if e["kind"] == "params"}
    return build_layer(d["call"], d["shape_in"], d.get("env"), nets)


class Chain(nn.Module):
    """A flat list of bijections applied in order (the inverse in reverse order)."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x, cond=None):
        ld = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, l = layer(x, cond)
            ld = ld + l
        return x, ld

    def inverse(self, y, cond=None):
        ld = y.new_zeros(y.shape[0])
        for layer in reversed(self.layers):
            y, l = layer.inverse(y, cond)
            ld = ld + l
        return y, ld


class QNet(UsesNets, nn.Module):
    """A q-network q(v | x): context net on x, base noise, a conditional flow (noise -> v).
    ``sample(x)`` returns v and log q(v | x) = log base(e) - log|det dv/de|."""

    def __init__(self, context: nn.Module | None, base: nn.Module, flow: Chain):
        super().__init__()
        self.context, self.base, self.flow = context, base, flow

    def sample(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx = self.run_net(self.context, x) if self.context is not None else None
        e, log_base = self.base.rsample(x.shape[0], x)
        v, ld = self.flow(e, ctx)
        return v, log_base - ld


def _qnet(g, q_last: str, bits: int | None) -> QNet:
    chain = g.nodes[q_last]["chain"]
    nodes = sorted((n for n, d in g.nodes(data=True) if d["chain"] == chain), key=lambda n: g.nodes[n]["order"])
    context = base = None
    layers = []
    for n in nodes:
        d = g.nodes[n]
        if d["role"] == CONTEXT:
            context = d["call"].definition.layer_class().from_op(d["call"].args, tuple(d["shape_in"]), bits)
        elif d["role"] == PRIOR:
            base = d["call"].definition.layer_class().from_op(d["call"].args, tuple(d["shape_in"]), None, {})
        elif d["role"] == BIJECTION:
            layers.append(_layer(g, n))
    return QNet(context, base, Chain(layers))


class FlowModel(nn.Module):
    """A compiled flow. Inputs are integer-valued tensors for data with ``bits`` (values
    0 .. 2^bits - 1, any float or integer dtype), real tensors otherwise."""

    def __init__(self, spec: Spec, g):
        super().__init__()
        self.name = spec.name
        self.spec_text = spec.text
        self.data_shape = tuple(spec.data.shape)
        self.bits = spec.data.bits
        self.dims = spec.data.dims
        self.dequant_q: QNet | None = None
        self.dequantize_kind: str | None = None
        self.aug_q: QNet | None = None
        self.augment: nn.Module | None = None
        then, steps, plan = [], [], []
        index: dict[str, int] = {}
        for n in data_chain(g, "p"):
            d = g.nodes[n]
            role = d["role"]
            if role == "input" or (role == PRIOR and n != "p/prior"):
                continue
            if role == DEQUANTIZER:
                self.dequantize_kind = d["op"]
                for u, _, e in g.in_edges(n, data=True):
                    if e["kind"] == "sample":
                        self.dequant_q = _qnet(g, u, self.bits)
            elif d["unit"] == "dequantize" and role == BIJECTION:
                then.append(_layer(g, n))
            elif role == AUGMENT and d["op"] == "input":
                self.augment = _layer(g, n)
                for u, _, e in g.in_edges(n, data=True):
                    if e["kind"] == "sample":
                        self.aug_q = _qnet(g, u, None)
            elif role == PRIOR:
                self.prior = _layer(g, n)
            elif role in (BIJECTION, DROP, AUGMENT):
                reads: tuple[int, ...] = ()
                if role == AUGMENT:
                    gnode = next(u for u, _, e in g.in_edges(n, data=True) if e["kind"] == "params")
                    srcs = sorted((u for u, _, e in g.in_edges(gnode, data=True) if e["kind"] == "condition"),
                                  key=lambda u: g.nodes[u]["order"])
                    reads = tuple(index.get(u, -1) for u in srcs)
                index[n] = len(steps)
                steps.append(_layer(g, n))
                plan.append(Step({BIJECTION: BIJ, DROP: DROP_STEP, AUGMENT: CROSS}[role], reads))
        self.then = Chain(then)
        self.steps = nn.ModuleList(steps)
        self.plan = plan
        self._save = sorted({i for s in plan for i in s.reads})

    # ------------------------------------------------------------------ plans
    def _forward_plan(self, x: torch.Tensor):
        ld = x.new_zeros(x.shape[0])
        saved = {-1: x} if -1 in self._save else {}
        dropped = []
        for i, (step, layer) in enumerate(zip(self.plan, self.steps)):
            if step.kind == BIJ:
                x, l = layer(x)
            elif step.kind == DROP_STEP:
                x, l, z = layer(x)
                dropped.append(z)
            else:
                x, l = layer(x, [saved[j] for j in step.reads])
            ld = ld + l
            if i in self._save:
                saved[i] = x
        return x, ld, dropped

    def _inverse_plan(self, z: torch.Tensor, dropped: list | None, temperature: float) -> torch.Tensor:
        x = z
        dropped = list(dropped) if dropped is not None else None
        for step, layer in zip(reversed(self.plan), reversed(self.steps)):
            if step.kind == BIJ:
                x, _ = layer.inverse(x)
            elif step.kind == DROP_STEP:
                x = layer.inverse(x, dropped.pop() if dropped else None, temperature)
            else:
                x = layer.inverse(x)
        return x

    # ------------------------------------------------------------------ pieces
    def _dequantize(self, x: torch.Tensor, centre: bool = False):
        dtype = self._dtype()
        x = x.to(dtype)
        if self.bits is None:
            return x, x.new_zeros(x.shape[0])
        if centre:
            u, log_r = torch.full_like(x, 0.5), x.new_zeros(x.shape[0])
        elif self.dequant_q is not None:
            u, log_r = self.dequant_q.sample(x)
        else:
            u, log_r = torch.rand_like(x), x.new_zeros(x.shape[0])
        v = (x + u) / (2 ** self.bits)
        return v, -self.dims * self.bits * math.log(2) - log_r

    def _check_batch(self, x: torch.Tensor) -> None:
        """Refuse a batch the flow cannot read, naming the shape it expects (no tensor read)."""
        if tuple(x.shape[1:]) != self.data_shape or x.dim() < 1 or x.shape[0] < 1:
            want = "x".join(map(str, self.data_shape))
            raise ValueError(f"{self.name}: expected a batch [N, {want}] with N >= 1; got {list(x.shape)}")

    def _to_model_space(self, x: torch.Tensor, centre: bool = False):
        self._check_batch(x)
        v, ld = self._dequantize(x, centre)
        v, l = self.then(v)
        ld = ld + l
        if self.augment is not None:
            z, log_q = self.aug_q.sample(v)
            v, l = self.augment(v, z, log_q)
            ld = ld + l
        return v, ld

    def _from_model_space(self, v: torch.Tensor) -> torch.Tensor:
        if self.augment is not None:
            v = self.augment.inverse(v)
        v, _ = self.then.inverse(v)
        if self.bits is not None:
            v = torch.floor(v * 2 ** self.bits).clamp(0, 2 ** self.bits - 1)
        return v

    def _dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.get_default_dtype()

    # ------------------------------------------------------------------ public API
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The training objective per example: log p(x) in nats (one-sample ELBO when the
        model augments or dequantizes variationally). Same as ``log_prob``."""
        return self.log_prob(x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        v, ld = self._to_model_space(x)
        z, l, _ = self._forward_plan(v)
        return ld + l + self.prior.log_prob(z)

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, samples: int = 1, chunk: int | None = None) -> torch.Tensor:
        """Importance-weighted estimate log (1/S) sum_s exp(log w_s) (VFlow eq. 5, DenseFlow
        eq. 20), streamed ``chunk`` samples at a time with a running float64 logsumexp, so
        memory stays bounded for any S. ``chunk`` defaults to what keeps one forward pass near
        2^20 input values."""
        n = x.shape[0]
        if chunk is None:  # about 2^20 input values per forward pass: ~340 CIFAR images, ~500k 2-D points
            chunk = max(1, min(samples, (1 << 20) // max(n * self.dims, 1)))
        acc = None
        done = 0
        while done < samples:
            c = min(chunk, samples - done)
            xr = x.repeat(c, *([1] * (x.dim() - 1)))
            lw = self.log_prob(xr).view(c, n).double()
            part = torch.logsumexp(lw, 0)
            acc = part if acc is None else torch.logaddexp(acc, part)
            done += c
        return (acc - math.log(samples)).to(self._dtype())

    def bits_per_dim(self, x: torch.Tensor, samples: int = 1, chunk: int | None = None) -> torch.Tensor:
        """-log p(x) / (D ln 2), D the data dims only (augmented dims are not counted)."""
        ll = self.log_prob(x) if samples == 1 else self.log_likelihood(x, samples, chunk)
        return -ll / (self.dims * math.log(2))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> Latents:
        """The latents of x. Integer data is placed at the centre of its bin (u = 1/2, not a
        sample of r), so ``decode(encode(x)) == x`` exactly whenever the flow's float error
        stays below half a level (always in float64; in float32 a coupling saturated far in its
        tails, such as VFlow's smooth logit, can lose the last level); augmented dims are
        sampled from q(z | x)."""
        v, _ = self._to_model_space(x, centre=True)
        z, _, dropped = self._forward_plan(v)
        return Latents(z, dropped)

    @torch.no_grad()
    def decode(self, latents: Latents, temperature: float = 1.0) -> torch.Tensor:
        return self._from_model_space(self._inverse_plan(latents.z, latents.dropped, temperature))

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        if n < 1 or not temperature > 0:
            raise ValueError(f"sample needs n >= 1 and temperature > 0; got n={n}, temperature={temperature}")
        like = next(iter(self.parameters()), torch.zeros(()))
        z = self.prior.sample(n, temperature, like)
        return self._from_model_space(self._inverse_plan(z, None, temperature))

    def compile_nets(self, **options) -> "FlowModel":
        """torch.compile every conditioner and context net in place (regional compilation: the
        nets hold nearly all the compute; the flat plan around them stays eager, so a 74-module
        DenseFlow compiles in minutes instead of one huge graph). ``options`` go to
        ``nn.Module.compile`` (default: static shapes)."""
        from ..layers.base import ContextModule, NetModule
        options.setdefault("dynamic", False)
        for m in self.modules():
            if isinstance(m, (NetModule, ContextModule)):
                m.compile(**options)
        return self

    def set_precision(self, dtype: torch.dtype | None) -> "FlowModel":
        """Run every conditioner and context net under autocast to ``dtype`` (e.g. torch.bfloat16
        on CUDA); the bijections' arithmetic, log-dets and the mixture CDF stay in float32.
        ``None`` turns it off."""
        for m in self.modules():
            if isinstance(m, UsesNets):
                m.autocast_dtype = dtype
        return self

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Run the data-dependent initialisation (actnorm) on a first batch."""
        was = self.training
        self.train()
        self.log_prob(x)
        self.train(was)


def compile_spec(spec: Spec | str, overrides=None) -> FlowModel:
    if not isinstance(spec, Spec):
        spec = load(spec, overrides)
    g, diag = build(spec)
    report = check_graph(spec, g, diag)
    if not report.valid:
        e = report.errors[0]
        raise SpecError(f"cannot compile an invalid spec: {e['text']}")
    model = FlowModel(spec, g)
    return model


__all__ = ["FlowModel", "Latents", "compile_spec", "layer_for", "CONDITIONER"]
