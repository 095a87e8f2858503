"""Conditioner nets and context nets against the layer descriptions they are built from.

For every ``net`` and ``context`` op of the registry (and the conditional factor-out prior),
at tiny sizes: each leaf of the op's description (:mod:`augflow_dsl.ops.net_descriptions`) is built
into exactly one module (or parameter) of the right type holding exactly the leaf's
parameters, and no parameter lies outside a leaf; the parameter count derived from the
description equals numel() exactly; the MACs derived from it equal FlopCounterMode's count
exactly, taken per example as (FLOPs(batch 2) - FLOPs(batch 1)) / 2 (the counter counts
convolutions, matrix products and attention; what it leaves out -- norms, activations,
bias adds, softmax -- the descriptions leave out too). Output shapes; zero output at init
(zero-initialised last layer) and non-zero once the parameters are perturbed.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from flops import count_flops  # noqa: E402

from augflow_dsl.ops import net_descriptions as nl  # noqa: E402
from augflow_dsl.ops import registry  # noqa: E402
from augflow_dsl.ops.registry import NetIO, OpEnv  # noqa: E402
from augflow_dsl.layers import contexts as ctx_layers, layer_of  # noqa: E402
from augflow_dsl.layers.instantiate import build  # noqa: E402
from augflow_dsl.layers import net_modules as net_layers  # noqa: E402
from augflow_dsl.layers.dense_kernel import DenseBlockFunction  # noqa: E402
from augflow_dsl.layers import net_list as list_layers  # noqa: E402
from augflow_dsl.ops.net_list import NET_LAYERS, NetLayerCall  # noqa: E402


def _layers(*calls) -> tuple:
    """A net written as layers (issue 22): (name, positional args...) per layer."""
    out = []
    for name, *args in calls:
        schema = NET_LAYERS[name].Args
        out.append(NetLayerCall(name, schema(**dict(zip(schema.model_fields, args)))))
    return tuple(out)


# FlopCounterMode has no formula for the CPU flash-attention kernel that
# scaled_dot_product_attention dispatches to on CPU; count it as the CUDA kernels are.

# (op, args, io)
NET_CASES = [
    ("mlp", dict(hidden=7), NetIO(3, 4)),
    ("mlp", dict(hidden=5, layers=3), NetIO(2, 6, context=3)),
    ("mlp", dict(hidden=4, layers=1), NetIO(1, 2)),
    ("glow_net", dict(filters=6), NetIO(3, 4, 4, 4)),
    ("glow_net", dict(filters=5), NetIO(2, 4, 4, 2, context=3)),
    ("resnet", dict(filters=6, blocks=2), NetIO(3, 4, 4, 4)),
    ("resnet", dict(filters=4, blocks=0), NetIO(2, 2, 2, 4, context=1)),
    ("resnet", dict(filters=5, blocks=1), NetIO(1, 4, 3, 3, context=2)),
    ("conv_attention", dict(filters=8, blocks=2, heads=2), NetIO(3, 6, 4, 4)),
    ("conv_attention", dict(filters=6, blocks=1, heads=3, dropout=0.2), NetIO(2, 4, 4, 2, context=3)),
    ("conv_attention", dict(filters=4, blocks=2, heads=1, position="none"), NetIO(1, 2, 2, 4, context=2)),
    ("conv_attention", dict(filters=4, blocks=0), NetIO(2, 2, 2, 2)),
    ("dense_attention", dict(project=8, depth=2, growth=4), NetIO(3, 4, 4, 4)),
    ("dense_attention", dict(project=6, depth=1, growth=3, landmarks=2, embed=4), NetIO(2, 2, 2, 4, context=3)),
    ("dense_attention", dict(project=4, depth=3, growth=2, landmarks=8), NetIO(1, 2, 4, 4, context=1)),
    ("dense", dict(mid=6, depth=2, growth=4), NetIO(3, 6, 4, 4)),
    ("dense", dict(mid=5, depth=1, growth=3, residual=False), NetIO(2, 4, 2, 4, context=4)),
    ("cross_unit_net", dict(), NetIO(3, 4, 4, 4)),
    ("cross_unit_net", dict(expansion=2), NetIO(5, 2, 2, 6)),
    ("dense_attention", dict(project=8, depth=1, growth=2, heads=2, landmarks=4), NetIO(2, 2, 4, 4)),
    ("dense_attention", dict(project=6, depth=1, growth=2, heads=3, landmarks=8, embed=6), NetIO(1, 2, 8, 4, context=2)),
    ("dense_attention", dict(project=8, depth=1, growth=2, heads=2, landmarks=2, tokens="channel_runs"),
     NetIO(2, 2, 4, 4)),
    ("layers", dict(list=_layers(("conv", 3, 6), ("actnorm",), ("relu",), ("resblock",), ("zero_conv", 3))),
     NetIO(3, 4, 4, 4, context=2)),
    ("layers", dict(list=_layers(("linear", 5), ("batchnorm",), ("gelu",), ("zero_linear",))), NetIO(2, 4)),
]

# (op, args, in_shape, bits)
CONTEXT_CASES = [
    ("gated_context", dict(filters=8, blocks=2), (3, 4, 4), 8),
    ("gated_context", dict(filters=6, blocks=1, input="raw", dropout=0.1), (2, 2, 6), None),
    ("gated_context", dict(filters=4, blocks=0), (1, 2, 2), 5),
    ("dense_context", dict(filters=8, depth=2, growth=4), (3, 4, 4), 8),
    ("dense_context", dict(filters=5, depth=1, growth=3), (2, 2, 6), 5),
    ("data_context", dict(), (3, 4, 4), 8),
    ("data_context", dict(), (5,), None),
]


def _id(case):
    return f"{case[0]}-{'-'.join(f'{k}{v}' for k, v in case[1].items())}-{case[2]}"


def _nparams(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build_net(op_name, kwargs, io):
    op = registry.get(op_name)
    args = op.Args(**kwargs)
    return op, args, layer_of(op).from_op(args, io)


def _net_inputs(io, batch):
    if io.h == 0:
        x = torch.randn(batch, io.c_in)
        c = torch.randn(batch, io.context) if io.context else None
    else:
        x = torch.randn(batch, io.c_in, io.h, io.w)
        c = torch.randn(batch, io.context, io.h, io.w) if io.context else None
    return x, c


def _out_shape(io, batch):
    return (batch, io.c_out) if io.h == 0 else (batch, io.c_out, io.h, io.w)


def _flops(fn) -> int:
    return count_flops(fn)


def _macs_per_example(run) -> float:
    """Marginal MACs of one example: (FLOPs(2) - FLOPs(1)) / 2."""
    return (_flops(lambda: run(2)) - _flops(lambda: run(1))) / 2


def _perturb(module):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))


# ---------------------------------------------------------------------------------------
# coverage
# ---------------------------------------------------------------------------------------

def test_every_net_and_context_op_is_covered():
    assert {c[0] for c in NET_CASES} == set(registry.names("net"))
    assert {c[0] for c in CONTEXT_CASES} == set(registry.names("context"))


def test_layer_paths_resolve():
    for name in registry.names("net") + registry.names("context"):
        cls = layer_of(name)
        module = (list_layers if name == "layers" else net_layers) if name in registry.names("net") else ctx_layers
        assert getattr(module, cls.__name__) is cls


# ---------------------------------------------------------------------------------------
# nets
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", NET_CASES, ids=_id)
def test_net_params_match_formula(case):
    op, args, net = _build_net(*case)
    assert _nparams(net) == op.net_params(args, case[2])


@pytest.mark.parametrize("case", NET_CASES, ids=_id)
def test_net_zero_at_init_then_nonzero(case):
    torch.manual_seed(0)
    _, _, net = _build_net(*case)
    io = case[2]
    net.eval()
    x, c = _net_inputs(io, 3)
    with torch.no_grad():
        y = net(x, c)
    assert y.shape == _out_shape(io, 3)
    assert torch.count_nonzero(y) == 0
    _perturb(net)
    with torch.no_grad():
        y = net(x, c)
    assert y.shape == _out_shape(io, 3)
    assert torch.isfinite(y).all()
    assert y.abs().amax() > 0
    # train mode (dropout, batch norm statistics) gives the same shapes and runs backward
    net.train()
    y = net(x, c)
    y.square().sum().backward()
    # (the position embedding of a conv_attention without blocks is counted but unused)
    unused = {"pos"} if case[0] == "conv_attention" and case[1].get("blocks", 10) == 0 else set()
    assert all(p.grad is not None for n, p in net.named_parameters() if n not in unused)


@pytest.mark.parametrize("case", [c for c in NET_CASES if c[2].h > 0], ids=_id)
def test_net_output_does_not_depend_on_input_memory_layout(case):
    """Nets run their 1x1 convs as GEMMs on channels-last views; an NCHW and a channels-last
    copy of the same input must give the same output (float64, perturbed weights)."""
    torch.manual_seed(0)
    _, _, net = _build_net(*case)
    io = case[2]
    net.double().eval()
    _perturb(net)
    x, c = (None if t is None else t.double() for t in _net_inputs(io, 2))
    cl = (lambda t: None if t is None else t.contiguous(memory_format=torch.channels_last))
    with torch.no_grad():
        y, y_cl = net(x, c), net(cl(x), cl(c))
    assert y.is_contiguous()
    torch.testing.assert_close(y_cl, y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", NET_CASES, ids=_id)
def test_net_macs_match_formula(case):
    op, args, net = _build_net(*case)
    net.eval()
    io = case[2]
    inputs = {b: _net_inputs(io, b) for b in (1, 2)}
    measured = _macs_per_example(lambda b: net(*inputs[b]))
    assert measured > 0
    assert op.net_macs(args, io) == measured


def test_net_context_is_required_and_used():
    torch.manual_seed(0)
    for case in NET_CASES:
        io = case[2]
        if not io.context:
            continue
        _, _, net = _build_net(*case)
        net.eval()
        _perturb(net)
        x, c = _net_inputs(io, 2)
        with pytest.raises(ValueError):
            net(x)
        with torch.no_grad():
            assert not torch.allclose(net(x, c), net(x, c + 1.0)), case[0]


def test_check_io_refuses_bad_shapes():
    op = registry.get("conv_attention")
    with pytest.raises(ValueError):
        layer_of(op).from_op(op.Args(filters=6, heads=4), NetIO(2, 2, 4, 4))
    op = registry.get("dense_attention")
    with pytest.raises(ValueError):
        layer_of(op).from_op(op.Args(project=8, landmarks=3), NetIO(2, 2, 4, 4))


# ---------------------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------------------

def test_pinv_newton_schulz_matches_pinv():
    torch.manual_seed(0)
    k = torch.softmax(3 * torch.randn(2, 3, 4, 4, dtype=torch.float64), dim=-1)
    z = net_layers._pinv_newton_schulz(k, iters=30)
    assert torch.allclose(z, torch.linalg.pinv(k), atol=1e-6)


def test_nystrom_with_all_tokens_as_landmarks_is_exact_attention():
    """With m = n landmarks, K1 = K2 = K3 = softmax(QK^T/sqrt(d)) and the Nystrom product is
    exact attention (plus v), Xiong et al. 2021 eq. 14."""
    torch.manual_seed(0)
    attn = build(nl.NystromAttention.of(4, 4, heads=2, landmarks=4, positions=4, iters=40)).double()
    with torch.no_grad():
        attn.qkv.weight.mul_(4)
    x = torch.randn(2, 4, 2, 2, dtype=torch.float64)
    t = attn.qkv(x).reshape(2, 3, 2, 2, 4).permute(1, 0, 2, 4, 3)
    q, k, v = t[0], t[1], t[2]
    exact = torch.softmax(q @ k.transpose(-1, -2) / 2 ** 0.5, dim=-1) @ v + v
    expect = attn.out(exact.transpose(-1, -2).reshape(2, 4, 2, 2))
    assert torch.allclose(attn(x), expect, atol=1e-6)


def test_gated_attention_heads_are_contiguous_channel_runs():
    torch.manual_seed(0)
    f, heads, h, w = 4, 2, 2, 3
    blk = build(nl.GatedAttention.of(f, heads, h * w))
    x = torch.randn(2, f, h, w)
    t = blk.qkv(x).reshape(2, 3 * f, h * w)
    outs = []
    for i in range(heads):
        sl = lambda s: t[:, s * f + i * 2: s * f + i * 2 + 2].transpose(1, 2)  # noqa: E731
        q, k, v = sl(0), sl(1), sl(2)
        outs.append((torch.softmax(q @ k.transpose(1, 2) / 2 ** 0.5, dim=-1) @ v).transpose(1, 2))
    a = torch.cat(outs, dim=1).reshape(2, f, h, w)
    val, gate = blk.proj(a).chunk(2, dim=1)
    assert torch.allclose(blk(x), x + val * torch.sigmoid(gate), atol=1e-5)


def test_channel_layer_norm():
    ln = build(nl.LayerNorm(3))
    x = torch.randn(2, 3, 4, 5)
    with torch.no_grad():
        ln.norm.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        ln.norm.bias.copy_(torch.tensor([0.0, -1.0, 1.0]))
    mean, var = x.mean(1, keepdim=True), x.var(1, unbiased=False, keepdim=True)
    expect = (x - mean) / torch.sqrt(var + 1e-5) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) \
        + torch.tensor([0.0, -1.0, 1.0]).view(1, 3, 1, 1)
    assert torch.allclose(ln(x), expect, atol=1e-5)


# ---------------------------------------------------------------------------------------
# the description is the only source
# ---------------------------------------------------------------------------------------

# (op, args, shape) of drops whose layer is built from a description
DROP_CASES = [
    ("factor_out", dict(prior="conditional"), (4, 2, 6)),
    ("factor_out", dict(), (4, 2, 2)),
    ("squeeze_and_drop", dict(), (2, 4, 4)),
]


def _described(kind, case):
    """(the op's description, the module its layer builds) for a case of ``kind``."""
    op = registry.get(case[0])
    args = op.Args(**case[1])
    if kind == "net":
        return op.describe(args, case[2]), layer_of(op).from_op(args, case[2])
    if kind == "context":
        return op.describe(args, case[2]), layer_of(op).from_op(args, case[2], case[3])
    return op.describe(args, case[2]), layer_of(op).from_op(args, case[2], OpEnv(), {})


def _signature(obj) -> tuple:
    """What a built leaf is: its class, its parameters' shapes and memory strides, and the
    settings that change its arithmetic (kernel, stride, padding, dropout rate, init scale)."""
    if isinstance(obj, torch.nn.Parameter):
        return ("parameter", tuple(obj.shape))
    settings = tuple(getattr(obj, a, None) for a in ("kernel_size", "stride", "padding", "p", "init_scale"))
    return (type(obj), settings, tuple((n, tuple(p.shape), p.stride()) for n, p in obj.named_parameters()))


LEAF_CASES = ([("net", c) for c in NET_CASES] + [("context", c) for c in CONTEXT_CASES]
              + [("drop", c) for c in DROP_CASES])


@pytest.mark.parametrize("kind,case", LEAF_CASES, ids=lambda x: x if isinstance(x, str) else _id(x))
def test_every_leaf_is_built_into_one_module_holding_its_parameters(kind, case):
    """Each leaf of the op's description is the module (or parameter) at the leaf's path, built
    as ``build(leaf)`` builds it, holding exactly the leaf's parameter count; every parameter of
    the module belongs to exactly one leaf. A mismatch names the leaf."""
    desc, module = _described(kind, case)
    owner: dict[int, str] = {}
    for path, leaf in desc.leaves():
        if isinstance(leaf, nl.Parameter):
            got = module.get_parameter(path)
            params = [got]
        else:
            got = module.get_submodule(path)
            params = list(got.parameters())
        assert _signature(got) == _signature(build(leaf)), path
        assert sum(p.numel() for p in params) == leaf.params(), path
        for p in params:
            assert id(p) not in owner, f"{path} shares a parameter with {owner[id(p)]}"
            owner[id(p)] = path
    stray = [n for n, p in module.named_parameters() if id(p) not in owner]
    assert not stray, f"parameters outside the description: {stray}"
    assert desc.params() == _nparams(module)


def test_conditional_factor_out_macs_equal_the_flop_count():
    op = registry.get("factor_out")
    args = op.Args(prior="conditional")
    layer = layer_of(op).from_op(args, (4, 2, 6), OpEnv(), {}).eval()
    inputs = {b: torch.randn(b, 4, 2, 6) for b in (1, 2)}
    assert op.macs(args, (4, 2, 6), OpEnv()) == _macs_per_example(lambda b: layer(inputs[b])) > 0


def test_description_counts_add_up_over_the_tree():
    """Parameters and MACs of a composite are its leaves' plus what it declares itself."""
    d = nl.NystromAttention.of(8, 4, heads=2, landmarks=2, positions=16)
    assert d.params() == sum(leaf.params() for _, leaf in d.leaves()) == (8 * 12 + 12) + (4 * 8 + 8)
    assert d.macs() == sum(leaf.macs() for _, leaf in d.leaves()) + d.own_macs()
    assert [p for p, _ in nl.DenseBlock.of(3, 2, 4, 5, 9).leaves()] == [
        "layers.0.net.0", "layers.0.net.1", "layers.0.net.2", "layers.0.net.3",
        "layers.1.net.0", "layers.1.net.1", "layers.1.net.2", "layers.1.net.3", "gate.conv"]
    with pytest.raises(ValueError):
        nl.DenseBlock.of(3, 1, 4, 5, 9, residual=True)


# ---------------------------------------------------------------------------------------
# context nets
# ---------------------------------------------------------------------------------------

def _build_context(op_name, kwargs, in_shape, bits):
    op = registry.get(op_name)
    args = op.Args(**kwargs)
    return op, args, layer_of(op).from_op(args, in_shape, bits)


def _context_input(in_shape, bits, batch):
    if bits is None:
        return torch.randn(batch, *in_shape)
    return torch.randint(0, 2 ** bits, (batch, *in_shape)).float()


@pytest.mark.parametrize("case", CONTEXT_CASES, ids=_id)
def test_context_params_shape_macs(case):
    torch.manual_seed(0)
    op, args, net = _build_context(*case)
    in_shape, bits = case[2], case[3]
    env = OpEnv()
    assert _nparams(net) == op.params(args, in_shape, env)
    net.eval()
    inputs = {b: _context_input(in_shape, bits, b) for b in (1, 2, 3)}
    with torch.no_grad():
        y = net(inputs[3])
    assert y.shape == (3, *op.out_shape(args, in_shape, env))
    assert torch.isfinite(y).all()
    measured = _macs_per_example(lambda b: net(inputs[b]))
    assert op.macs(args, in_shape, env) == measured
    if op.name == "data_context":
        assert y is inputs[3]
    else:
        net.train()
        net(inputs[2]).square().sum().backward()
        assert all(p.grad is not None for p in net.parameters())


def test_gated_context_scaling_and_column_split():
    op = registry.get("gated_context")
    net = layer_of(op).from_op(op.Args(filters=4, blocks=0), (2, 2, 4), 8)
    x = torch.randint(0, 256, (1, 2, 2, 4)).float()
    s = x / 256 - 0.5
    split = torch.cat([s[..., [0, 2]], s[..., [1, 3]]], dim=1)
    assert torch.allclose(net(x), net.proj(split), atol=1e-6)
    raw = layer_of(op).from_op(op.Args(filters=4, blocks=0, input="raw"), (2, 2, 4), None)
    raw.load_state_dict(net.state_dict())
    assert torch.allclose(raw(s), net(x), atol=1e-6)
    with pytest.raises(ValueError):
        layer_of(op).from_op(op.Args(filters=4), (2, 2, 4), None)


def test_dense_context_scaling():
    op = registry.get("dense_context")
    net = layer_of(op).from_op(op.Args(filters=4, depth=1, growth=2), (1, 2, 2), 8)
    x = torch.full((1, 1, 2, 2), 255.0)
    assert torch.allclose(net(x), net.net(torch.ones(1, 1, 2, 2)))
    x = torch.zeros(1, 1, 2, 2)
    assert torch.allclose(net(x), net.net(-torch.ones(1, 1, 2, 2)))


def test_flowpp_convs_data_dependent_init_once():
    """Flow++ convs (flows.py:26-66): the first training batch sets each inner conv's output to
    zero mean and std init_scale per channel; the buffer makes it happen once."""
    from augflow_dsl.layers.net_modules import ConvAttention, DataInitConv2d

    torch.manual_seed(0)
    op = registry.get("conv_attention")
    net = ConvAttention.from_op(op.Args(filters=8, blocks=1, heads=2), NetIO(3, 6, 4, 4))
    x = torch.randn(16, 3, 4, 4) * 3 + 1
    net.train()
    h = net.proj_in(x)
    assert torch.allclose(h.mean((0, 2, 3)), torch.zeros(8), atol=1e-5)
    assert torch.allclose(h.std((0, 2, 3), unbiased=False), torch.ones(8), atol=1e-4)
    w = net.proj_in.weight.clone()
    net.proj_in(x * 5)
    assert torch.equal(w, net.proj_in.weight), "initialised once only"
    convs = [m for m in net.modules() if isinstance(m, DataInitConv2d)]
    assert len(convs) == 1 + 4 and all(bool(c.initialized) for c in convs[:1])
    net(x)
    assert all(bool(c.initialized) for c in convs)
    assert sum(p.numel() for p in net.parameters()) == registry.get("conv_attention").net_params(
        registry.get("conv_attention").Args(filters=8, blocks=1, heads=2), NetIO(3, 6, 4, 4))


def test_dropout_mask_is_bernoulli_and_scaled():
    torch.manual_seed(0)
    drop = net_layers.Dropout(0.2)
    x = torch.rand(200_000) + 1.0  # never zero, so a zero output marks a dropped unit
    x.requires_grad_()
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.005  # 10 standard errors: 0.0009 each
    torch.testing.assert_close(y[kept], x[kept] / 0.8)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.8)
    drop.eval()
    assert drop(x) is x


@pytest.mark.parametrize("residual", [False, True])
def test_dense_block_kernel_matches_autograd(residual, monkeypatch):
    """The dense block's buffer kernel (layers/dense_kernel.py) gives autograd's values and
    gradients (float64, perturbed weights) and passes gradcheck; its inference path (no_grad)
    gives the same values and is the path eager no_grad takes."""
    torch.manual_seed(0)
    c0, out = (6, 6) if residual else (5, 7)
    blk = build(nl.DenseBlock.of(c0, 3, 4, out, 20, residual=residual)).double()
    _perturb(blk)
    x = torch.randn(2, c0, 5, 4, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(2, out, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        assert net_layers.DenseBlock._path(x) == "inference"
        y_inference = blk(x)
    assert net_layers.DenseBlock._path(x) == "kernel"
    runs = []
    for path in ("kernel", "autograd"):
        monkeypatch.setattr(net_layers.DenseBlock, "_path", staticmethod(lambda t, k=path: k))
        x.grad = None
        blk.zero_grad()
        y = blk(x)
        y.backward(gy)
        runs.append([y.detach(), x.grad] + [p.grad for p in blk.parameters()])
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y_inference, runs[1][0], rtol=1e-12, atol=1e-12)
    params = [p.detach().requires_grad_() for p in blk.parameters()]
    assert torch.autograd.gradcheck(
        lambda t, *ps: DenseBlockFunction.apply(t, residual, *ps), (x, *params))


@pytest.mark.parametrize("kwargs", [dict(kernel_size=1), dict(kernel_size=1, bias=False),
                                    dict(kernel_size=3, padding=1), dict(kernel_size=1, stride=2)])
def test_gemm_conv_equals_conv2d(kwargs):
    """GemmConv2d's 1x1 GEMM (and its fallback for other kernels) is nn.Conv2d's arithmetic,
    for NCHW and channels-last inputs, in float64."""
    torch.manual_seed(0)
    conv = net_layers.GemmConv2d(5, 7, **kwargs).double()
    x = torch.randn(3, 5, 6, 4, dtype=torch.float64)
    expect = torch.nn.functional.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        torch.testing.assert_close(conv(inp), expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "vector"])
def test_concat_elu_equals_the_formula_with_its_gradient(layout, seed):
    """The exp-only concat_elu against elu(cat(x, -x)): values, input gradients, memory format,
    gradcheck in float64, and the plain formula under vmap."""
    from augflow_dsl.layers.modules import concat_elu
    import torch.nn.functional as F

    shape = (3, 5) if layout == "vector" else (3, 5, 4, 6)
    x = 3 * torch.randn(shape)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    y = concat_elu(x)
    ref = F.elu(torch.cat([x, -x], dim=1))
    torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-6)
    assert y.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    g = torch.randn_like(ref)
    (gx,) = torch.autograd.grad(y, x, g)
    (gref,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(gx, gref, rtol=1e-6, atol=1e-6)
    x64 = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(concat_elu, (x64,))
    xs = torch.randn(2, *shape)
    batched = torch.vmap(concat_elu)(xs)
    torch.testing.assert_close(batched[1], F.elu(torch.cat([xs[1], -xs[1]], dim=1)))
