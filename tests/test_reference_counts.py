"""Specs of published configurations against the parameter counts of their authors' code.

Each reference model was built once from its authors' code (outside this project) and its
parameter names and shapes stored as a facts fixture (tests/fixtures/*.params.json, *.vars.json; no code). The
tests hold three numbers equal: the spec's count (``check``), the fixture's sum and the hard number
in the spec's header, and check that the compiled model's ``numel`` is the check's count.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

import augflow_dsl as af

ROOT = Path(__file__).resolve().parents[1]
SPECS, FIXTURES = ROOT / "specs", ROOT / "tests" / "fixtures"


def _fixture(name: str) -> dict[str, list[int]]:
    return json.loads((FIXTURES / name).read_text())


# ------------------------------------------------------------------ Neural Spline Flows, CIFAR-10 8-bit
# bayesiains/nsf @ eaa9377, experiments/images.py with image_configs/cifar-10-8bit.json (helper B, issue 22)
NSF_TOTAL = 11_835_054
NSF_LEVELS = [3_546_678, 3_711_288, 4_577_088]


def _nsf_parts(shapes: dict[str, list[int]]) -> Counter:
    """The authors' parameters by (level, kind): kind actnorm, lu (nflows' LULinear with its bias) or net."""
    parts: Counter = Counter()
    for name, shape in shapes.items():
        level = int(re.match(r"_transform\._transforms\.1\._transforms\.(\d+)\.", name).group(1))
        kind = ("net" if ".transform_net." in name else "actnorm" if name.endswith(("log_scale", ".shift"))
                else "lu")
        parts[level, kind] += math.prod(shape)
    return parts


def _our_parts(report) -> Counter:
    """Our check's parameters by (level, kind), a level starting at each squeeze."""
    parts: Counter = Counter()
    level = -1
    for node in report.nodes:
        if node.op == "squeeze":
            level += 1
        kind = {"actnorm": "actnorm", "conv1x1": "lu", "layers": "net"}.get(node.op)
        if node.params:
            assert kind is not None, node
            parts[level, kind] += node.params
    return parts


def test_nsf_cifar10_count_is_the_authors():
    shapes = _fixture("nsf-cifar10.params.json")
    assert len(shapes) == 726
    assert sum(math.prod(s) for s in shapes.values()) == NSF_TOTAL
    report = af.check(af.load(SPECS / "nsf-cifar10.flow"))
    assert report.valid and report.parameters.total == NSF_TOTAL
    assert f"{NSF_TOTAL:,}" in (SPECS / "nsf-cifar10.flow").read_text()
    theirs, ours = _nsf_parts(shapes), _our_parts(report)
    assert ours == theirs
    assert [sum(v for (lv, _), v in ours.items() if lv == i) for i in range(3)] == NSF_LEVELS


@pytest.mark.parametrize("overrides", [dict(hidden=8, blocks=2, steps=1, bins=3)])
def test_nsf_cifar10_small_counts_follow_the_formula(overrides):
    """Per level c: steps x (2c + c^2 + c + net) + c^2 + c, net = ConvResidualNet(c/2 -> h -> (3K - 1) c/2)
    with blocks x (2 BN + 2 3x3 convs): the count the authors' code gives at any size, which the check and
    the compiled model's numel give (at a reduced size: the full model takes seconds to build)."""
    h, b, s, k = overrides["hidden"], overrides["blocks"], overrides["steps"], overrides["bins"]
    want = 0
    for c in (12, 48, 192):
        half = c // 2
        net = (half * h + h) + b * (4 * h + 2 * (9 * h * h + h)) + (h * (3 * k - 1) * half + (3 * k - 1) * half)
        want += s * (2 * c + c * c + c + net) + c * c + c
    spec = af.load(SPECS / "nsf-cifar10.flow", overrides)
    model = af.compile(spec)
    assert af.check(spec).parameters.total == sum(p.numel() for p in model.parameters()) == want


# ------------------------------------------------------------------ RealNVP, CIFAR-10 (helper B, issue 22)
# specs/realnvp.flow follows the paper; chrischute/real-nvp @ df51ad5 (RealNVP(2, 3, 64, 8), its train.py) is a
# public PyTorch RealNVP with other conventions. Its header states both counts and what makes up the difference.
REALNVP_TOTAL, CHUTE_TOTAL = 18_498_728, 19_631_640


def test_realnvp_count_and_chrischutes_are_the_headers():
    text = (SPECS / "realnvp.flow").read_text()
    report = af.check(af.load(SPECS / "realnvp.flow"))
    assert report.valid and report.parameters.total == REALNVP_TOTAL
    shapes = _fixture("realnvp-chute.params.json")
    assert len(shapes) == 1110 and sum(math.prod(s) for s in shapes.values()) == CHUTE_TOTAL

    def part(test) -> int:
        return sum(math.prod(s) for name, s in shapes.items() if test(name))

    skips = part(lambda n: "skip" in n)  # in_skip and skips.*: the 1x1 convs summed into the output (with g)
    wn_g = part(lambda n: n.endswith("weight_g") and "rescale" not in n)
    rescale = part(lambda n: ".rescale." in n)
    assert (skips, wn_g, rescale) == (1_162_368, 28_390, 102)
    for number in (REALNVP_TOTAL, CHUTE_TOTAL, skips, wn_g, rescale):
        assert f"{number:,}" in text, number
    assert [n.params for n in report.nodes if n.op == "actnorm"] == [6, 6, 6, 12, 12, 12, 12]


# ------------------------------------------------------------------ Glow, CIFAR-10 (openai/glow)
# openai/glow @ 91b2c57, the README's CIFAR-10 run (train.py --problem cifar10 --n_level 3 --depth 32
# --flow_permutation 2 --flow_coupling 1 --learntop, width 512): tf.trainable_variables() of the authors'
# TF1 graph in tests/fixtures/glow-openai.vars.json, specs/glow-openai.flow (helper A, issue 22)
GLOW_SPEC = SPECS / "glow-openai.flow"
GLOW_TOTAL = 44_603_604
GLOW_VARIABLES = 1_161


@pytest.fixture(scope="module")
def glow_vars() -> dict[str, list[int]]:
    return _fixture("glow-openai.vars.json")


@pytest.fixture(scope="module")
def glow_report():
    return af.check(af.load(GLOW_SPEC))


def _glow_part(name: str) -> tuple[str, int]:
    """(kind, channels of the level) of a reference variable: model/<level>/<step>/..., model/pool<level>/...
    or model/prior/..."""
    if name.startswith("model/prior/"):
        return "prior", 48
    m = re.match(r"model/pool(\d)/", name)
    if m:
        return "split", 12 * 2 ** int(m.group(1))
    level, rest = re.match(r"model/(\d)/\d+/(.*)", name).groups()
    kind = "actnorm" if rest.startswith("actnorm") else "conv1x1" if rest.startswith("invconv") else "net"
    return kind, 12 * 2 ** int(level)


def test_glow_count_is_the_authors(glow_vars, glow_report):
    assert len(glow_vars) == GLOW_VARIABLES
    assert sum(math.prod(s) for s in glow_vars.values()) == GLOW_TOTAL
    assert glow_report.valid and glow_report.parameters.total == GLOW_TOTAL
    assert f"{GLOW_TOTAL:,}" in GLOW_SPEC.read_text()


def test_glow_count_is_the_authors_part_by_part(glow_vars, glow_report):
    """Each op of the spec against the reference variables it stands for, per level: the flow actnorms
    (actnorm_center/b, actnorm_scale/logs), the 1x1 convs (invconv/W), the coupling nets (f1/...), the
    split priors (pool<level>/conv/...) and the learned top prior (prior/p/...)."""
    theirs: Counter = Counter()
    for name, shape in glow_vars.items():
        theirs[_glow_part(name)] += math.prod(shape)
    kinds = {"actnorm": "actnorm", "conv1x1": "conv1x1", "layers": "net", "factor_out": "split",
             "learned_normal": "prior"}
    ours: Counter = Counter()
    for node in glow_report.nodes:
        if node.params:
            assert node.op in kinds, node
            ours[kinds[node.op], node.shape_in[0] * (2 if node.op == "layers" else 1)] += node.params
    assert ours == theirs


def test_glow_compiled_numel_is_the_count():
    with torch.device("meta"):
        model = af.compile(af.load(GLOW_SPEC))
    assert sum(p.numel() for p in model.parameters()) == GLOW_TOTAL
    small = {"size": 16, "width": 8, "depth": 2}
    spec = af.load(GLOW_SPEC, small)
    assert sum(p.numel() for p in af.compile(spec).parameters()) == af.check(spec).parameters.total


def test_glow_learntop_prior_is_a_conv2d_zeros_of_zeros(seed):
    """learned_normal(param: glow_learntop): inside the image the mean and log-std are the conv's bias
    times exp(3 logs) (the weights on the zero channels do nothing); at a corner the edge channel's
    weights on the 5 taps that fall on the border are added."""
    from conftest import op_call

    from augflow_dsl.compiler.model import build_layer
    from augflow_dsl.ops.registry import OpEnv

    c, shape = 3, (3, 4, 4)
    prior = build_layer(op_call("learned_normal", param="glow_learntop"), shape, OpEnv(), {}, {})
    conv = prior.conv
    with torch.no_grad():
        for p in prior.parameters():
            p.normal_()
    s = torch.exp(3 * conv.logs.flatten())
    loc, log_scale = prior.loc, prior.log_scale
    assert loc.shape == shape == log_scale.shape
    b = conv.conv.bias
    assert torch.allclose(loc[:, 1:3, 1:3], (b[:c] * s[:c]).view(c, 1, 1).expand(c, 2, 2)), f"seed {seed}"
    assert torch.allclose(log_scale[:, 1:3, 1:3], (b[c:] * s[c:]).view(c, 1, 1).expand(c, 2, 2)), f"seed {seed}"
    edge = conv.conv.weight[:, -1]  # [2C, 3, 3]: the weights on the border channel
    corner = edge[:, 0, :].sum(1) + edge[:, 1:, 0].sum(1)
    assert torch.allclose(loc[:, 0, 0], (b[:c] + corner[:c]) * s[:c]), f"seed {seed}"
    z = torch.randn(2, *shape)
    ref = torch.distributions.Normal(loc, torch.exp(log_scale)).log_prob(z).flatten(1).sum(1)
    assert torch.allclose(prior.log_prob(z), ref), f"seed {seed}"
    assert sum(p.numel() for p in prior.parameters()) == 9 * (2 * c + 1) * 2 * c + 4 * c


def test_edge_bias_conv_is_glows_add_edge_padding(seed):
    """conv(3, out, edge_bias: true): inside, a plain 'same' conv of x; at the border the weights on
    the appended channel add up over the taps that fall on the zero padding; a 1x1 has no border channel.
    Counts and MACs derived from the description equal numel() and torch's flop count."""
    import torch.nn.functional as F
    from flops import count_flops

    from augflow_dsl.layers import layer_of
    from augflow_dsl.ops.net_list import NET_LAYERS, NetLayerCall
    from augflow_dsl.ops.registry import NetIO, get

    def L(name, **kw):
        return NetLayerCall(name, NET_LAYERS[name].Args(**kw))

    io = NetIO(3, 4, 5, 6)
    layers = (L("conv", kernel=3, out=5, bias=False, edge_bias=True), L("actnorm"), L("relu"),
              L("conv", kernel=1, out=5, bias=False, edge_bias=True), L("zero_conv", logscale=3.0, edge_bias=True))
    op = get("layers")
    args = op.Args(list=layers)
    net = layer_of(op).from_op(args, io).eval()
    assert sum(p.numel() for p in net.parameters()) == op.net_params(args, io) == (
        9 * (3 + 1) * 5 + 2 * 5 + 5 * 5 + 9 * (5 + 1) * 4 + 4 + 4)
    flops = (count_flops(lambda: net(torch.randn(2, 3, 5, 6))) - count_flops(lambda: net(torch.randn(1, 3, 5, 6)))) / 2
    assert flops == op.net_macs(args, io), f"seed {seed}"
    conv, x = net.net[0], torch.randn(2, 3, 5, 6)
    w = conv.weight
    with torch.no_grad():
        diff = conv(x) - F.conv2d(x, w[:, :3], padding=1)
    assert torch.allclose(diff[:, :, 1:-1, 1:-1], torch.zeros(2, 5, 3, 4), atol=1e-6), f"seed {seed}"
    corner = w[:, 3, 0, :].sum(1) + w[:, 3, 1:, 0].sum(1)
    assert torch.allclose(diff[:, :, 0, 0], corner.expand(2, 5), atol=1e-6), f"seed {seed}"
    assert torch.allclose(diff[:, :, 0, 2], w[:, 3, 0, :].sum(1).expand(2, 5), atol=1e-6), f"seed {seed}"
    assert net.net[3].weight.shape == (5, 5, 1, 1)


def test_glow_split_and_top_prior_arguments_are_checked():
    text = ("flow: t\ndata: {shape: [3, 8, 8], bits: 8}\nstages: [squeeze, factor_out(layout: interleaved), squeeze]\n"
            "prior: normal\n")
    report = af.check(af.loads(text, "t.flow"))
    e = report.errors[0]
    assert not report.valid and "prior: conditional" in e["message"] and (e["line"], e["column"]) == (3, 19)
    text = "flow: t\ndata: {shape: [6], bits: 8}\nstages: [reverse]\nprior: learned_normal(param: glow_learntop)\n"
    report = af.check(af.loads(text, "t.flow"))
    assert not report.valid and "needs image data" in report.errors[0]["message"]
