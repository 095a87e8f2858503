"""Nets written in the spec as lists of net layers (issue 22; augflow_dsl/ops/net_list.py, net_list_blocks.py).

(a) The counts derived from a layered net's description equal numel() (and the MACs equal torch's flop
count) for every net layer, blocks included; the net starts at zero. (b) Every named net of the registry
written as layers (glow_net, mlp, resnet -- with resblock, and spelled with residual --, cross_unit_net, dense,
conv_attention): the same parameter count and MACs, the same initial weights from one seed in the same order
and, with the weights moved off their init and copied, the same function in eval and in training mode; the
named nets layers cannot write are listed with the reason (dense_attention, and conv_attention in part).
(c) Errors: an unknown layer, a wrong last width, an image layer on vectors, a flow op in a net list, a
residual block that changes the width, a block's bad arguments -- each located at the layer.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from flops import count_flops  # noqa: E402

import augflow_dsl as af  # noqa: E402
from augflow_dsl.errors import SpecError  # noqa: E402
from augflow_dsl.layers import layer_of  # noqa: E402
from augflow_dsl.ops.net_list import NET_LAYERS, NetLayerCall  # noqa: E402
from augflow_dsl.ops.registry import NetIO, get, names  # noqa: E402


def L(name: str, *args, **kwargs) -> NetLayerCall:
    """A net layer call as the spec writes it: positional arguments in the schema's order."""
    schema = NET_LAYERS[name].Args
    return NetLayerCall(name, schema(**dict(zip(schema.model_fields, args)), **kwargs))


IMAGE_LIST = (L("conv", 3, 6), L("actnorm"), L("relu"), L("conv", 1, 6), L("concat_elu"), L("gated_conv"),
              L("layernorm"), L("batchnorm"), L("elu"), L("gelu"), L("tanh"), L("dropout", 0.1), L("resblock"),
              L("weightnorm", L("conv", 3, 5)),
              L("residual", (L("batchnorm"), L("relu"), L("conv", 3, 5), L("dropout", 0.1), L("conv", 1, 5))),
              L("zero_conv", 3, logscale=3.0))
VECTOR_LIST = (L("linear", 7), L("actnorm"), L("residual", (L("relu"), L("linear", 7))), L("relu"), L("layernorm"),
               L("batchnorm"), L("elu"),
               L("weightnorm", L("linear", 5)),
               L("concat_elu"), L("zero_linear"))
CASES = [
    (IMAGE_LIST, NetIO(3, 4, 4, 4, context=2)),
    ((L("conv", 3, 5), L("relu"), L("zero_conv", 3)), NetIO(2, 4, 3, 3)),
    ((L("conv", 3, 8, init="data"), L("attention", 2), L("nystrom_attention", heads=2), L("dense_block", 2, 4),
      L("dense_block", 1, 3, 6, residual=False), L("gated_conv1x1", 5), L("gated_conv1x1")), NetIO(3, 4, 4, 4)),
    (VECTOR_LIST, NetIO(3, 4, context=1)),
    ((L("linear", 4), L("tanh"), L("linear")), NetIO(2, 6)),
]


def _net(layers, io):
    op = get("layers")
    args = op.Args(list=tuple(layers))
    op.check_io(args, io)
    return op, args, layer_of(op).from_op(args, io)


def _inputs(io, n):
    shape = (io.h, io.w) if io.h else ()
    x = torch.randn(n, io.c_in, *shape)
    return x, (torch.randn(n, io.context, *shape) if io.context else None)


def test_every_net_layer_has_a_case():
    used = {c.name for layers, _ in CASES for c in layers}
    assert used == set(NET_LAYERS), sorted(set(NET_LAYERS) - used)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{len(c[0])}layers-{c[1]}")
def test_counts_equal_the_module(case, seed):
    layers, io = case
    op, args, net = _net(layers, io)
    assert sum(p.numel() for p in net.parameters()) == op.net_params(args, io), f"seed {seed}"
    net.eval()
    x, c = _inputs(io, 2)
    out = net(x, c)
    assert out.shape == ((2, io.c_out, io.h, io.w) if io.h else (2, io.c_out))
    if layers[-1].name.startswith("zero"):
        assert out.abs().max() == 0  # zero-initialised last layer: the coupling starts at the identity
    flops = (count_flops(lambda: net(*_inputs(io, 2))) - count_flops(lambda: net(*_inputs(io, 1)))) / 2
    assert flops == op.net_macs(args, io), f"seed {seed}"


def test_zero_conv_logscale_is_glows_conv2d_zeros(seed):
    op, args, net = _net((L("conv", 3, 4), L("zero_conv", 3, logscale=3.0)), NetIO(2, 4, 3, 3))
    zc = net.net[1]
    with torch.no_grad():
        zc.conv.weight.normal_()
        zc.logs.normal_()
    x = torch.randn(2, 2, 3, 3)
    h = net.net[0](x)
    assert torch.allclose(net(x), zc.conv(h) * torch.exp(3.0 * zc.logs)), f"seed {seed}"
    assert op.net_params(args, NetIO(2, 4, 3, 3)) == (9 * 2 * 4 + 4) + (9 * 4 * 4 + 4) + 4


def test_net_actnorm_is_data_initialised(seed):
    _, _, net = _net((L("conv", 3, 5), L("actnorm"), L("zero_conv", 3)), NetIO(2, 4, 4, 4))
    x = torch.randn(8, 2, 4, 4) * 3 + 1
    net.train()
    net(x)
    h = net.net[1](net.net[0](x))
    assert torch.allclose(h.mean((0, 2, 3)), torch.zeros(5), atol=1e-5), f"seed {seed}"
    assert torch.allclose(h.std((0, 2, 3), unbiased=False), torch.ones(5), atol=1e-4), f"seed {seed}"
    assert bool(net.net[1].initialized)


# ---------------------------------------------------------------------------------------
# (b) the named nets written as layers
# ---------------------------------------------------------------------------------------

def _glow(f):
    return L("conv", 3, f), L("relu"), L("conv", 1, f), L("relu"), L("zero_conv", 3)


def _resnet_residual(f, blocks):
    """resnet's block relu(x + BN(3x3(relu(BN(3x3(x)))))) spelled with ``residual`` and a relu after it."""
    block = (L("conv", 3, f), L("batchnorm"), L("relu"), L("conv", 3, f), L("batchnorm"))
    return (L("conv", 3, f), L("relu"), *blocks * (L("residual", block), L("relu")), L("zero_conv", 3))


def _conv_attention(f, blocks, heads):
    block = (L("gated_conv"), L("layernorm"), L("attention", heads), L("layernorm"))
    return (L("conv", 3, f, init="data"), *blocks * block, L("zero_conv", 3))


# (named net, its arguments, the same net as layers, io, the same description): every net op of the registry is
# here or in NOT_AS_LAYERS. Without the same description (a named net's channels-last convs, its own wiring) the
# test still asks for the same count, the same initial weights in the same order and the same function.
CTX = NetIO(3, 4, 4, 4, context=2)
NAMED = [
    ("glow_net", dict(filters=6), _glow(6), CTX, True),
    ("mlp", dict(hidden=7), (L("linear", 7), L("relu"), L("linear", 7), L("relu"), L("zero_linear")),
     NetIO(3, 4, context=2), True),
    ("resnet", dict(filters=6, blocks=2), (L("conv", 3, 6), L("relu"), L("resblock"), L("resblock"),
                                           L("zero_conv", 3)), CTX, True),
    ("resnet", dict(filters=6, blocks=2), _resnet_residual(6, 2), CTX, False),
    ("cross_unit_net", dict(expansion=2), (L("conv", 3, 6), L("relu"), L("zero_conv", 1)), NetIO(3, 4, 4, 4), True),
    ("dense", dict(mid=6, depth=2, growth=4), (L("conv", 1, 6), L("dense_block", 2, 4, residual=True),
                                               L("zero_conv", 1)), CTX, False),
    ("conv_attention", dict(filters=8, blocks=2, heads=2, position="none"), _conv_attention(8, 2, 2),
     NetIO(3, 4, 4, 4), False),
]
NOT_AS_LAYERS = {
    "dense_attention": "its Nystrom attention and dense block read the same input side by side and the fuse reads "
                       "their concatenation: two branches, and a layer list is one chain",
    "layers": "it is the net written as layers itself",
}
# named nets that layers write only in part, and why (test_what_layers_cannot_write_of_conv_attention checks it)
PARTLY = {
    "conv_attention": "position: learned adds one embedding that every attention block shares, and a context enters "
                      "every gated conv (1x1 of concat_elu(context)) rather than the first layer",
}


def test_every_named_net_is_written_as_layers_or_says_why_not():
    nets = set(names("net"))
    written = {c[0] for c in NAMED}
    assert not written & set(NOT_AS_LAYERS)
    assert written | set(NOT_AS_LAYERS) == nets, f"add to NAMED or NOT_AS_LAYERS: {sorted(nets - written)}"
    for reasons in (NOT_AS_LAYERS, PARTLY):
        assert all(isinstance(r, str) and len(r.split()) >= 6 for r in reasons.values()), "give the reason"
    assert set(PARTLY) <= written


def _copy_in_order(src, dst) -> None:
    """dst's state := src's, entry by entry in registration order (the keys of the two nets may differ)."""
    sa, sb = src.state_dict(), dst.state_dict()
    assert [v.shape for v in sa.values()] == [v.shape for v in sb.values()]
    dst.load_state_dict(dict(zip(sb, sa.values())))


@pytest.mark.parametrize("case", NAMED, ids=lambda c: f"{c[0]}{'' if c[4] else '-spelled'}")
def test_named_net_written_as_layers_is_the_same_net(case, seed):
    name, kwargs, layers, io, same_description = case
    named = get(name)
    nargs = named.Args(**kwargs)
    named.check_io(nargs, io)
    op, args, _ = _net(layers, io)
    assert (op.describe(args, io) == named.describe(nargs, io)) == same_description
    assert op.net_params(args, io) == named.net_params(nargs, io)
    assert op.net_macs(args, io) == named.net_macs(nargs, io)
    torch.manual_seed(seed)
    a = layer_of(named).from_op(nargs, io)
    torch.manual_seed(seed)
    b = layer_of(op).from_op(args, io)
    sa, sb = a.state_dict(), b.state_dict()
    if same_description:
        assert list(sa) == list(sb)
    assert [v.shape for v in sa.values()] == [v.shape for v in sb.values()]
    assert all(torch.equal(u, v) for u, v in zip(sa.values(), sb.values())), "the same seed: the same weights"
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.3 * torch.randn_like(p))
    _copy_in_order(a, b)
    x, c = _inputs(io, 3)
    for train in (False, True):  # eval, then training: batch norms on the batch, data-dependent init on it
        a.train(train), b.train(train)
        ya, yb = a(x, c), b(x, c)
        assert ya.abs().max() > 0
        if same_description:
            assert torch.equal(ya, yb), f"seed {seed}"
        else:  # the named net's channels-last convs sum in another order
            assert torch.allclose(ya, yb, rtol=1e-4, atol=1e-5), ((ya - yb).abs().max(), f"seed {seed}")
    assert sum(p.numel() for p in b.parameters()) == named.net_params(nargs, io)


def test_what_layers_cannot_write_of_conv_attention():
    """conv_attention's learned position embedding is one F x H x W tensor for all its attention blocks (the
    layered net has none), and its context enters each gated conv: a layered net reads it at the first layer."""
    io = NetIO(3, 4, 4, 4)
    named = get("conv_attention")
    op, args, _ = _net(_conv_attention(8, 2, 2), io)
    learned = named.Args(filters=8, blocks=2, heads=2, position="learned")
    assert named.net_params(learned, io) == op.net_params(args, io) + 8 * 4 * 4
    with_context = NetIO(3, 4, 4, 4, context=2)
    ctx = named.Args(filters=8, blocks=2, heads=2, position="none")
    parts = dict(named.describe(ctx, with_context).parts)
    assert all(blk.layers[0].ctx is not None for blk in parts["blocks"].layers)


SPEC = """\
flow: t
data: {{shape: [4, 8, 8], bits: 5}}
{defs}
stages: [squeeze, affine_coupling(net: {net}), conv1x1, affine_coupling(net: {net})]
"""


def test_named_net_and_its_layer_list_give_the_same_model_counts():
    named = af.check(af.loads(SPEC.format(defs="", net="glow_net(filters: 16)"), "a.flow"))
    listed = af.check(af.loads(SPEC.format(
        defs="net g(f): [conv(3, f), relu, conv(1, f), relu, zero_conv(3)]", net="g(16)"), "b.flow"))
    inline = af.check(af.loads(SPEC.format(
        defs="", net="[conv(3, 16), relu, conv(1, 16), relu, zero_conv]"), "c.flow"))
    assert named.valid and listed.valid and inline.valid
    assert named.parameters.total == listed.parameters.total == inline.parameters.total
    assert named.macs == listed.macs == inline.macs


def test_repetition_and_the_op_form():
    a = af.check(af.loads(SPEC.format(defs="net g(f): [conv(3, f), 2 * [relu, conv(1, f)], relu, zero_conv]",
                                      net="g(8)"), "a.flow"))
    b = af.check(af.loads(SPEC.format(
        defs="", net="layers([conv(3, 8), relu, conv(1, 8), relu, conv(1, 8), relu, zero_conv])"), "b.flow"))
    assert a.valid and b.valid and a.parameters.total == b.parameters.total


def test_a_layered_spec_compiles_and_round_trips(seed):
    text = SPEC.format(defs="net g(f): [conv(3, f), actnorm, relu, conv(1, f), actnorm, relu, "
                            "zero_conv(3, logscale: 3)]", net="g(8)")
    model = af.compile(af.loads(text, "m.flow"))
    assert sum(p.numel() for p in model.parameters()) == af.check(af.loads(text, "m.flow")).parameters.total
    x = torch.randint(0, 32, (4, 4, 8, 8)).float()
    model.train()
    lp = model.log_prob(x)  # the first training batch sets the nets' actnorms
    assert lp.shape == (4,) and torch.isfinite(lp).all(), f"seed {seed}"


# ---------------------------------------------------------------------------------------
# (c) errors, located at the layer
# ---------------------------------------------------------------------------------------

def _load_error(text):
    with pytest.raises(SpecError) as info:
        af.loads(text, "t.flow")
    return info.value


def _check_error(text):
    report = af.check(af.loads(text, "t.flow"))
    assert not report.valid
    return report.errors[0]


def test_unknown_net_layer_is_located_with_a_suggestion():
    e = _load_error(SPEC.format(defs="net g(f): [conv(3, f), rleu, zero_conv(3)]", net="g(8)"))
    assert "unknown net layer 'rleu'" in e.message and "did you mean 'relu'" in e.message
    assert (e.line, e.column) == (3, 24)


def test_a_flow_op_is_not_a_net_layer():
    e = _load_error(SPEC.format(defs="net g(f): [conv(3, f), conv1x1, zero_conv(3)]", net="g(8)"))
    assert "unknown net layer 'conv1x1'" in e.message and (e.line, e.column) == (3, 24)


def test_a_bad_layer_argument_is_located():
    e = _load_error(SPEC.format(defs="net g(f): [conv(3, f, colour: 2), zero_conv(3)]", net="g(8)"))
    assert "net layer 'conv' has no argument 'colour'" in e.message and e.line == 3


def test_a_wrong_last_width_names_the_layer_and_the_numbers():
    e = _check_error(SPEC.format(defs="net g(f): [conv(3, f), relu, zero_conv(3, out: 5)]", net="g(8)"))
    assert "last layer 'zero_conv'" in e["message"] and "gives 5 channels" in e["message"]
    assert "needs 16" in e["message"]  # 2 x the 8 transformed channels of 16x4x4
    assert (e["line"], e["column"]) == (3, 30)


def test_an_image_layer_on_vectors_is_located():
    text = "flow: t\ndata: {shape: [6], bits: 5}\nnet g(f): [linear(f), relu,\n  conv(3, f), zero_linear]\n" \
           "stages: [affine_coupling(net: g(8))]\n"
    e = _check_error(text)
    assert "net layer 'conv' needs image data" in e["message"] and (e["line"], e["column"]) == (4, 3)


def test_weightnorm_wraps_a_conv_or_a_linear_layer():
    e = _check_error(SPEC.format(defs="net g(f): [weightnorm(relu), zero_conv(3)]", net="g(8)"))
    assert "'weightnorm' wraps conv or linear; got 'relu'" in e["message"] and (e["line"], e["column"]) == (3, 23)
    e = _check_error(SPEC.format(defs="net g(f): [conv(2, f), zero_conv]", net="g(8)"))
    assert "kernel 2 is even" in e["message"] and (e["line"], e["column"]) == (3, 12)


def test_a_vector_layer_on_images_is_located():
    e = _check_error(SPEC.format(defs="net g(f): [linear(f), zero_conv(3)]", net="g(8)"))
    assert "net layer 'linear' needs vector data" in e["message"] and (e["line"], e["column"]) == (3, 12)


def test_a_residual_block_that_changes_the_width_is_located():
    e = _check_error(SPEC.format(defs="net g(f): [conv(3, f), residual([relu, conv(3, 5)]), zero_conv(3)]",
                                 net="g(8)"))
    assert "residual block's last layer 'conv' gives 5 channels" in e["message"] and "needs the 8" in e["message"]
    assert (e["line"], e["column"]) == (3, 40)
    e = _check_error(SPEC.format(defs="net g(f): [conv(3, f), residual([]), zero_conv(3)]", net="g(8)"))
    assert "'residual' needs at least one layer" in e["message"] and (e["line"], e["column"]) == (3, 24)
    text = ("flow: t\ndata: {shape: [6], bits: 5}\nnet g(f): [linear(f), residual([relu,\n  conv(3, f)]), "
            "zero_linear]\nstages: [affine_coupling(net: g(8))]\n")
    e = _check_error(text)
    assert "net layer 'conv' needs image data" in e["message"] and (e["line"], e["column"]) == (4, 3)


def test_block_layer_arguments_are_checked_where_they_stand():
    cases = [("[conv(3, f), attention(3), zero_conv(3)]", "8 input channels are not divisible by 3 heads", 24),
             ("[conv(3, f), nystrom_attention(landmarks: 5), zero_conv]", "not divisible by 5 landmarks", 24),
             ("[conv(3, f), dense_block(2, 4, out: 6, residual: true), zero_conv]", "out must be the 8", 24),
             ("[conv(3, f, init: data, bias: false), zero_conv]", "init: data", 12)]
    for net, phrase, column in cases:
        e = _check_error(SPEC.format(defs=f"net g(f): {net}", net="g(8)"))
        assert phrase in e["message"] and (e["line"], e["column"]) == (3, column), (net, e["message"])


def test_a_residual_net_in_a_spec_trains_a_step(seed):
    text = SPEC.format(defs="net g(f): [conv(3, f), 2 * residual([batchnorm, relu, conv(3, f), batchnorm, relu, "
                            "dropout(0.1), conv(3, f)]), relu, zero_conv(3)]", net="g(8)")
    report = af.check(af.loads(text, "r.flow"))
    model = af.compile(af.loads(text, "r.flow"))
    assert report.valid and sum(p.numel() for p in model.parameters()) == report.parameters.total
    block = 2 * (9 * 8 * 8 + 8) + 2 * 2 * 8  # two 3x3 convs and two batch norms of 8 channels
    assert report.parameters.total - af.check(af.loads(SPEC.format(
        defs="net g(f): [conv(3, f), relu, zero_conv(3)]", net="g(8)"), "p.flow")).parameters.total == 2 * 2 * block
    x = torch.randint(0, 32, (4, 4, 8, 8)).float()
    model.train()
    loss = -model.log_prob(x).mean()
    loss.backward()
    assert torch.isfinite(loss), f"seed {seed}"
