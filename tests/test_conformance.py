"""One conformance test over every registered op that has a torch layer (float64, tiny sizes).

For each configuration in CASES: the analytic parameter count equals ``numel()``; the analytic
MACs are within 1% of torch's flop counter (2 FLOPs per MAC, marginal cost per example);
bijections invert to 1e-10 and their log-det equals the log-abs-det of the autograd Jacobian
to 1e-8. The stochastic steps of the protocol -- dequantizers, augment points, drops, priors --
give x back from inverse(forward(x)) (a drop and a prior by replaying the tape of their
:class:`Draws`) and a log-weight equal to an independent formula given the noise they drew.
Inputs are fresh random tensors and every parameter is moved off its (zero) initialisation.
Seeds come from the test id (the ``seed`` fixture) and appear in the assertion messages.
"""
from __future__ import annotations

import math

import pytest
import torch
from flops import marginal_macs

from augflow_dsl.compiler.model import build_layer, layer_for
from augflow_dsl.layers import has_layer
from augflow_dsl.layers.base import Draws, Step
from augflow_dsl.layers.condition import ConditionState
from augflow_dsl.layers.priors import normal_log_prob
from augflow_dsl.ops.registry import (AUGMENT, BIJECTION, DEQUANTIZER, DROP, PRIOR, REGISTRY, OpCall, OpEnv, QFlow,
                                      get)
from augflow_dsl.ops.net_list import NET_LAYERS, NetLayerCall
from conftest import op_call


pytestmark = pytest.mark.usefixtures("float64")


call = op_call


def net(name: str, **args) -> OpCall:
    return call(name, **args)


TINY_ATTN = dict(filters=8, blocks=1, heads=2)
TINY_DENSE_ATTN = dict(project=8, depth=2, growth=4, landmarks=4)
GLOW = net("glow_net", filters=6)


def layered(*layers: tuple) -> OpCall:
    """A net written as layers (issue 22): each layer (name, positional args..., {keyword args}?)."""
    calls = []
    for name, *args in layers:
        kw = args.pop() if args and isinstance(args[-1], dict) else {}
        schema = NET_LAYERS[name].Args
        calls.append(NetLayerCall(name, schema(**dict(zip(schema.model_fields, args)), **kw)))
    return net("layers", list=tuple(calls))


LAYERED_IMAGE = layered(("conv", 3, 6), ("actnorm",), ("relu",), ("conv", 1, 6), ("concat_elu",), ("gated_conv",),
                        ("zero_conv", 3, {"logscale": 3.0}))
LAYERED_BLOCKS = layered(("conv", 3, 8, {"init": "data"}),
                         ("residual", layered(("batchnorm",), ("relu",), ("conv", 3, 8), ("elu",)).args.list),
                         ("attention", 2), ("nystrom_attention", {"heads": 2}), ("dense_block", 2, 4),
                         ("resblock",), ("gated_conv1x1", 6), ("zero_conv", 3))
LAYERED_VECTOR = layered(("linear", 7), ("layernorm",), ("elu",), ("linear", 5), ("tanh",), ("zero_linear",))

# (op, args, input shape, context shape or None, domain of x)
CASES = [
    ("actnorm", {}, (3, 4, 4), None, "real"),
    ("actnorm", {"per": "element"}, (3, 4, 4), None, "real"),
    ("actnorm", {"split": "columns"}, (3, 4, 4), None, "real"),
    ("actnorm", {}, (4,), None, "real"),
    ("conv1x1", {}, (3, 4, 4), None, "real"),
    ("conv1x1", {"param": "full"}, (3, 4, 4), None, "real"),
    ("conv1x1", {"param": "full", "split": "channels"}, (4, 2, 2), None, "real"),
    ("conv1x1", {"param": "full", "split": "columns", "init": "identity", "noise": 0.01}, (3, 4, 4), None, "real"),
    ("conv1x1", {"param": "lu"}, (3,), None, "real"),
    ("conv1x1", {"bias": True}, (3, 4, 4), None, "real"),
    ("conv1x1", {"param": "full", "split": "channels", "bias": True}, (4, 2, 2), None, "real"),
    ("conv1x1", {"bias": True}, (3,), None, "real"),
    ("squeeze", {}, (2, 4, 4), None, "real"),
    ("squeeze", {"order": "space_major"}, (2, 4, 4), None, "real"),
    ("unsqueeze", {}, (8, 2, 2), None, "real"),
    ("unsqueeze", {"order": "space_major"}, (8, 2, 2), None, "real"),
    ("swap", {}, (3, 2, 2), None, "real"),
    ("swap", {"split": "columns"}, (2, 2, 4), None, "real"),
    ("sigmoid", {}, (2, 3, 3), None, "real"),
    ("logit", {"alpha": 0.05}, (2, 3, 3), None, "unit"),
    ("shift", {"by": -0.5}, (2, 3, 3), None, "real"),
    ("affine_coupling", {"net": GLOW}, (4, 4, 4), None, "real"),
    ("affine_coupling", {"net": GLOW, "scale": "sigmoid", "layout": "halves"}, (3, 4, 4), None, "real"),
    ("affine_coupling", {"net": GLOW, "split": "columns", "scale": "exp"}, (2, 4, 4), None, "real"),
    ("affine_coupling", {"net": net("resnet", filters=4, blocks=1), "split": "checkerboard"}, (2, 4, 4), None,
     "real"),
    # the alternating mask (issue 22): the squares with i + j odd stay, on an odd-sized image too
    ("affine_coupling", {"net": net("resnet", filters=4, blocks=1), "split": "checkerboard", "parity": "odd"},
     (2, 4, 4), None, "real"),
    ("affine_coupling", {"net": GLOW, "split": "checkerboard", "parity": "odd", "scale": "sigmoid"}, (3, 3, 5),
     None, "real"),
    ("affine_coupling", {"net": net("dense_attention", **TINY_DENSE_ATTN)}, (4, 4, 4), None, "real"),
    ("affine_coupling", {"net": net("dense", mid=6, depth=2, growth=4)}, (4, 4, 4), (5, 4, 4), "real"),
    ("affine_coupling", {"net": net("mlp", hidden=7)}, (5,), None, "real"),
    # nets written as layers (issue 22), images and vectors, with a context
    ("affine_coupling", {"net": LAYERED_IMAGE}, (4, 4, 4), None, "real"),
    ("affine_coupling", {"net": LAYERED_IMAGE, "split": "checkerboard"}, (3, 4, 4), (2, 4, 4), "real"),
    ("affine_coupling", {"net": LAYERED_VECTOR, "layout": "halves"}, (5,), (2,), "real"),
    ("affine_coupling", {"net": LAYERED_BLOCKS}, (4, 4, 4), (2, 4, 4), "real"),  # the block layers
    ("affine_coupling", {"net": net("mlp", hidden=7), "layout": "halves"}, (4,), (2,), "real"),
    # the peer libraries' conventions (issue 22): FrEIA's soft clamp, nflows, normflows, an offset tanh2
    ("affine_coupling", {"net": GLOW, "scale": "softclamp", "clamp": 1.5}, (4, 4, 4), None, "real"),
    ("affine_coupling", {"net": net("mlp", hidden=7), "scale": "sigmoid", "eps": 1e-3, "layout": "halves",
                         "first": "shift"}, (5,), None, "real"),
    ("affine_coupling", {"net": GLOW, "scale": "sigmoid", "order": "shift_then_scale", "first": "shift",
                         "split": "columns"}, (2, 4, 4), None, "real"),
    ("affine_coupling", {"net": net("resnet", filters=4, blocks=1), "split": "checkerboard", "offset": 0.5,
                         "eps": 0.01, "order": "shift_then_scale", "scale": "exp"}, (2, 4, 4), None, "real"),
    ("additive_coupling", {"net": GLOW}, (4, 4, 4), None, "real"),
    ("additive_coupling", {"net": GLOW, "split": "columns"}, (2, 4, 4), None, "real"),
    ("additive_coupling", {"net": net("resnet", filters=4, blocks=1), "split": "checkerboard"}, (2, 4, 4), None,
     "real"),
    ("additive_coupling", {"net": GLOW, "split": "checkerboard", "parity": "odd"}, (3, 4, 4), None, "real"),
    ("additive_coupling", {"net": net("mlp", hidden=7)}, (5,), (2,), "real"),
    ("reverse", {}, (3, 2, 2), None, "real"),
    ("reverse", {}, (5,), None, "real"),
    ("shuffle", {"seed": 3}, (6, 2, 2), None, "real"),
    ("shuffle", {"seed": 0}, (5,), None, "real"),
    ("maf", {"hidden": 7}, (5,), None, "real"),
    ("maf", {"hidden": 6, "layers": 1, "reverse": True}, (4,), None, "real"),
    ("iaf", {"hidden": 7}, (5,), None, "real"),
    ("iaf", {"hidden": 5, "layers": 3, "reverse": True}, (3,), None, "real"),
    ("maf", {"hidden": 7, "transform": "rq_spline", "bins": 4, "bound": 1.0}, (5,), None, "real"),
    ("iaf", {"hidden": 6, "transform": "rq_spline", "bins": 3, "bound": 1.5, "reverse": True}, (4,), None, "real"),
    ("mixture_coupling", {"net": net("conv_attention", **TINY_ATTN), "components": 3}, (4, 2, 2), None, "real"),
    ("mixture_coupling", {"net": net("conv_attention", **TINY_ATTN), "components": 4, "split": "columns",
                          "logit": "smooth"}, (2, 2, 4), (3, 2, 2), "real"),
    ("mixture_coupling", {"net": net("conv_attention", **TINY_ATTN, position="none"), "components": 2,
                          "logit": "smooth"}, (2, 3, 3), None, "real"),
    # rq_spline_coupling: bounds of ~1 so that the N(0, 1) inputs fall both inside and outside them
    ("rq_spline_coupling", {"net": GLOW, "bins": 4, "bound": 1.0}, (4, 4, 4), None, "real"),
    ("rq_spline_coupling", {"net": GLOW, "split": "columns", "bins": 3, "bound": 1.5}, (2, 4, 4), None, "real"),
    ("rq_spline_coupling", {"net": net("resnet", filters=4, blocks=1), "split": "checkerboard", "bins": 5,
                            "bound": 1.0}, (2, 4, 4), None, "real"),
    ("rq_spline_coupling", {"net": GLOW, "split": "checkerboard", "parity": "odd", "bins": 3, "bound": 1.0},
     (2, 3, 5), None, "real"),
    ("rq_spline_coupling", {"net": net("mlp", hidden=7), "bins": 6, "bound": 0.8}, (7,), None, "real"),
    ("rq_spline_coupling", {"net": net("mlp", hidden=7)}, (4,), (2,), "real"),
    ("rq_spline_coupling", {"net": GLOW, "bins": 4, "bound": 1.0, "temperature": 9.8, "shift_derivatives": False},
     (4, 4, 4), None, "real"),
    ("factor_out", {}, (4, 2, 2), None, "real"),
    ("factor_out", {"prior": "conditional"}, (4, 2, 2), None, "real"),
    # openai/glow's split2d_prior: Conv2dZeros with the edge channel, mean and log-std interleaved
    ("factor_out", {"prior": "conditional", "layout": "interleaved", "logscale": 3.0, "edge_bias": True},
     (4, 3, 3), None, "real"),
    ("squeeze_and_drop", {}, (2, 4, 4), None, "real"),
    ("cross_unit", {"growth": 2}, (4, 4, 4), (6, 4, 4), "real"),
    ("input", {"channels": 3}, (2, 4, 4), None, "real"),
    ("input", {"channels": 2}, (3,), None, "real"),
    ("uniform", {}, (2, 3, 3), None, "int"),
    ("variational", {}, (2, 3, 3), None, "int"),
    ("variational", {}, (4,), None, "int"),
    ("normal", {}, (3, 2, 2), None, "real"),
    ("learned_normal", {}, (3, 2, 2), None, "real"),
    ("learned_normal", {}, (5,), None, "real"),
    ("learned_normal", {"param": "glow_learntop"}, (3, 3, 4), None, "real"),  # openai/glow --learntop
    # conditional flows (issue 23): the spec's condition (COND features, one fixed row) read by nets and densities
    ("class_normal", {}, (3, 2, 2), None, "real"),
    ("class_normal", {}, (5,), None, "real"),
    ("affine_coupling", {"net": GLOW, "split": "checkerboard", "parity": "odd", "condition": True}, (2, 3, 4), None,
     "real"),
    ("affine_coupling", {"net": net("mlp", hidden=7), "condition": True}, (5,), (2,), "real"),
    ("additive_coupling", {"net": LAYERED_IMAGE, "condition": True}, (4, 3, 3), None, "real"),
    ("mixture_coupling", {"net": GLOW, "components": 3, "condition": True}, (4, 2, 3), None, "real"),
    ("rq_spline_coupling", {"net": net("mlp", hidden=7), "bins": 5, "condition": True}, (4,), None, "real"),
    ("factor_out", {"condition": True}, (4, 2, 2), None, "real"),
    ("factor_out", {"prior": "conditional", "layout": "interleaved", "condition": True}, (4, 2, 3), None, "real"),
]
COND = 3

COVERED_ROLES = (BIJECTION, DROP, AUGMENT, PRIOR, DEQUANTIZER)
BITS = 3


class StubQ(torch.nn.Module):
    """A stand-in q-network for the stochastic steps' checks: v = sigmoid(e) (``unit``) or e,
    e ~ N(0, I) of ``shape``; log q is a known function of v."""

    def __init__(self, shape, unit: bool):
        super().__init__()
        self.shape, self.unit = tuple(shape), unit

    def sample(self, x):
        e = torch.randn(x.shape[0], *self.shape, dtype=x.dtype)
        return (torch.sigmoid(e), self.log_q(e)) if self.unit else (e, self.log_q(e))

    @staticmethod
    def log_q(e):
        return normal_log_prob(e) + 0.25 * e.flatten(1).sum(1)


def _qflow() -> QFlow:
    return QFlow("stub", (), call("normal"))


def test_every_op_with_a_layer_has_a_case():
    have = {c[0] for c in CASES}
    need = {n for n, op in REGISTRY.items() if op.role in COVERED_ROLES and has_layer(n)}
    assert need <= have, f"ops without a conformance case: {sorted(need - have)}"


def _x(shape, domain, n=3):
    if domain == "int":
        return torch.randint(0, 2 ** BITS, (n, *shape)).double()
    x = torch.randn(n, *shape)
    return torch.rand(n, *shape) * 0.9 + 0.05 if domain == "unit" else x


def _perturb(module):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn_like(p))


def _build(name, args, shape, ctx):
    """The layer of the case, its q-networks (if any) stubbed with :class:`StubQ`."""
    op = get(name)
    if "q" in op.Args.model_fields:
        args = {**args, "q": _qflow()}
    c = call(name, **args)
    env = OpEnv(context=ctx, bits=BITS if op.role == DEQUANTIZER else None, condition=COND, condition_in=COND)
    qs = {slot: StubQ(target, op.role == DEQUANTIZER) for slot, (_, target, _) in op.qnets(c.args, shape, env).items()}
    layer = build_layer(c, shape, env, op.nets(c.args, shape, env), qs)
    if op.reads_condition(c.args):  # what the plan and the model do: one condition row for the batch
        layer.reads_condition = True
        layer.condition_state = ConditionState(raw=torch.randn(1, COND), embedded=torch.randn(1, COND))
    return layer, c


def _marginal_macs(fn) -> float:
    return marginal_macs(fn)


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_conformance(case, seed):
    name, args, shape, ctx, domain = case
    layer, c = _build(name, args, shape, ctx)
    op = get(name)
    env = OpEnv(context=ctx, condition=COND, condition_in=COND)
    assert isinstance(layer, Step), f"{name}: a data-path layer must implement the step protocol"
    # parameters: analytic == numel
    assert sum(p.numel() for p in layer.parameters()) == op.params(c.args, shape, env), f"seed {seed}"
    x = _x(shape, domain)
    cond = torch.randn(x.shape[0], *ctx) if (ctx is not None and op.role == BIJECTION) else None
    if op.role == BIJECTION and hasattr(layer, "initialized"):
        layer.train()
        layer(x)  # data-dependent init on a first batch
        assert bool(layer.initialized)
    _perturb(layer)
    layer.eval()
    x = _x(shape, domain)  # fresh inputs after init
    if op.role == BIJECTION:
        _check_bijection(layer, x, cond, seed)
        expected = op.macs(c.args, shape, env)
        got = _marginal_macs(lambda n: layer(_x(shape, domain, n), None if cond is None else cond[:n]))
        assert got == pytest.approx(expected, rel=0.01, abs=0.5), (got, expected, f"seed {seed}")
        return
    layer.draws = Draws(tape=[])
    if op.role == DROP:
        kept, logp = layer(x)
        (dropped,) = layer.draws.tape
        back = layer.inverse(kept)
        assert not layer.draws.tape and torch.allclose(back, x, rtol=0, atol=1e-12), f"seed {seed}"
        _check_drop_density(layer, name, kept, dropped, logp, seed)
        layer.draws = Draws()
        assert _marginal_macs(lambda n: layer(_x(shape, domain, n))) == pytest.approx(
            op.macs(c.args, shape, env), rel=0.01, abs=0.5), f"seed {seed}"
        layer.draws = Draws(temperature=0.7)
        sampled = layer.inverse(kept)
        assert sampled.shape == x.shape and torch.isfinite(sampled).all(), f"seed {seed}"
    elif op.role == AUGMENT:
        _check_augment(layer, name, x, ctx, seed)
    elif op.role == DEQUANTIZER:
        _check_dequantizer(layer, name, x, seed)
    elif op.role == PRIOR:
        z = _x(shape, domain)
        if op.reads_condition(c.args):  # class_normal: (mu, log s) = W y + b per channel, broadcast over positions
            h = layer.condition_state.raw @ layer.linear.weight.T + layer.linear.bias
            mu, log_s = (t.view(1, -1, *[1] * (len(shape) - 1)) for t in h.chunk(2, 1))
            ref = torch.distributions.Normal(mu.expand(1, *shape), torch.exp(log_s).expand(1, *shape))
        else:
            ref = torch.distributions.Normal(layer.loc.expand(shape) if hasattr(layer, "loc") else 0.0,
                                             torch.exp(layer.log_scale).expand(shape) if hasattr(layer, "loc") else 1.0)
        expected = ref.log_prob(z).flatten(1).sum(1)
        assert torch.allclose(layer.log_prob(z), expected, rtol=1e-12), f"seed {seed}"
        y, lw = layer(z)
        assert y.shape == (z.shape[0], 0) and torch.allclose(lw, expected, rtol=1e-12), f"seed {seed}"
        assert torch.equal(layer.inverse(y), z) and not layer.draws.tape, f"seed {seed}"
        layer.draws = Draws(temperature=0.5)
        s = layer.inverse(y.new_zeros(4, 0))
        assert s.shape == (4, *shape) and torch.isfinite(s).all(), f"seed {seed}"
        s = layer.sample(4, 0.5)
        assert s.shape == (4, *shape) and torch.isfinite(s).all(), f"seed {seed}"


def _check_bijection(layer, x, cond, seed):
    """Round trip to 1e-10 of max|x|, log-det against autograd's Jacobian to 1e-8.

    Where the forward map is nearly flat (smallest singular value s of dy/dx), rounding y
    alone moves the recovered x by up to eps |y| / s, which no inverse can undo: a
    logistic-mixture coupling far in its tails has s ~ 1e-11 .. 1e-18 for some draws. The
    round-trip bound is therefore max(1e-10 max|x|, 1e3 eps max|y| / s) per example; for every
    well-conditioned example (s of order 1) it is the 1e-10 bound. The inverse's log-det is
    compared with the forward one at the point the inverse returns."""
    y, ld = layer(x, cond)
    x2, ld_inv = layer.inverse_and_logdet(y, cond)
    assert torch.equal(layer.inverse(y, cond), x2), f"the protocol's inverse is the first result (seed {seed})"
    # the inverse's log-det is log|det dx/dy| at the point it returns (x2 == x to the bound below)
    assert torch.allclose(ld_inv, -layer(x2, cond)[1], rtol=1e-10, atol=1e-10), f"seed {seed}"
    assert y.shape != x.shape or not torch.allclose(y, x), "the layer is the identity: the test proves nothing"
    eps = torch.finfo(x.dtype).eps
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        ci = None if cond is None else cond[i:i + 1]
        jac = torch.autograd.functional.jacobian(lambda t: layer(t, ci)[0].flatten(), xi).reshape(y[0].numel(), -1)
        ref = torch.linalg.slogdet(jac)[1]
        assert abs(ld[i].item() - ref.item()) <= 1e-8 * max(1.0, abs(ref.item())), (ld[i].item(), ref.item(), seed)
        s_min = torch.linalg.svdvals(jac)[-1].item()
        bound = max(1e-10 * x.abs().max().item(), 1e3 * eps * y[i].abs().max().item() / s_min)
        err = (x2[i] - x[i]).abs().max().item()
        assert err <= bound, (i, err, bound, s_min, f"seed {seed}")


def _check_drop_density(layer, name, kept, dropped, logp, seed):
    p = layer.conv(kept) if getattr(layer, "conv", None) is not None else None
    if getattr(layer, "cond_linear", None) is not None:  # the class-conditional part: W y + b per channel
        h = layer.condition_state.raw @ layer.cond_linear.weight.T + layer.cond_linear.bias
        p = (0.0 if p is None else p) + h[:, :, None, None].expand(kept.shape[0], -1, *kept.shape[2:])
    if p is not None:
        c = p.shape[1] // 2
        loc, log_s = (p[:, 0::2], p[:, 1::2]) if layer.interleaved else (p[:, :c], p[:, c:])
        ref = torch.distributions.Normal(loc, torch.exp(log_s)).log_prob(dropped)
    else:
        ref = torch.distributions.Normal(0.0, 1.0).log_prob(dropped)
    assert torch.allclose(logp, ref.flatten(1).sum(1), rtol=1e-12), f"seed {seed}"


def _check_dequantizer(layer, name, x, seed):
    """v = (x + u) / 2^bits with u in [0, 1), inverse(v) == x; log w = -D bits ln 2 - log r(u);
    with ``centre``: u = 1/2 and log r = 0."""
    levels, d = 2 ** BITS, x[0].numel()
    v, lw = layer(x)
    u = v * levels - x
    assert (u >= 0).all() and (u < 1).all() and torch.equal(layer.inverse(v), x), f"seed {seed}"
    log_r = StubQ.log_q(torch.logit(u)) if name == "variational" else torch.zeros(x.shape[0])
    assert torch.allclose(lw, -d * BITS * math.log(2) - log_r, rtol=1e-8), f"seed {seed}"
    layer.draws = Draws(centre=True)
    v, lw = layer(x)
    assert torch.equal(v, (x + 0.5) / levels) and torch.equal(layer.inverse(v), x), f"seed {seed}"
    assert torch.allclose(lw, torch.full_like(lw, -d * BITS * math.log(2))), f"seed {seed}"


def _check_augment(layer, name, x, ctx, seed):
    if name == "input":
        y, term = layer(x)
        c = x.shape[1]
        assert torch.equal(layer.inverse(y), x) and y.shape[1] == c + layer.channels, f"seed {seed}"
        # -log q(z | x), recomputed from the z the step appended
        assert torch.allclose(term, -StubQ.log_q(y[:, c:]), rtol=1e-12), f"seed {seed}"
        return
    reads = [torch.randn(x.shape[0], 2, *x.shape[2:]), torch.randn(x.shape[0], 4, *x.shape[2:])]
    y, term = layer(x, torch.cat(reads, 1))
    assert torch.equal(layer.inverse(y), x), f"seed {seed}"
    # independent recomputation of DenseFlow eq. 9 with the same noise
    p = layer.g(torch.cat(reads, 1))
    g = layer.growth
    mu, log_sigma = p[:, :g], 2 * torch.tanh(p[:, g:] / 2)
    eps = (y[:, x.shape[1]:] - mu) / torch.exp(log_sigma)
    ref = log_sigma.flatten(1).sum(1) - torch.distributions.Normal(0.0, 1.0).log_prob(eps).flatten(1).sum(1)
    assert torch.allclose(term, ref, rtol=1e-10), f"seed {seed}"
    assert not torch.allclose(mu, torch.zeros_like(mu)), "g still at its zero init"


def test_mixture_inverse_tolerance_float32(seed):
    """float32: the safeguarded Newton inverse reaches the dtype's resolution (documented tolerance)."""
    layer = layer_for(call("mixture_coupling", net=net("conv_attention", **TINY_ATTN), components=5), (4, 2, 2))
    layer = layer.float()
    _perturb(layer)
    layer.eval()
    x = torch.randn(8, 4, 2, 2, dtype=torch.float32) * 3
    y, _ = layer(x)
    x2 = layer.inverse(y)
    assert (x2 - x).abs().max() < 1e-4 * math.sqrt(x.abs().max().item()), f"seed {seed}"
