"""The extension story: a new augment op, a new drop op and a new coupling net, defined in this
file alone -- for each, an op definition (an ``Op`` subclass: arguments, shape and count rules)
and a torch layer class that declares the op it implements with ``@implements`` -- used by a
spec that checks, compiles and runs. No edit to the grammar, the graph builder, the checker, the
compiler, ``augflow_dsl/ops/__init__.py`` or ``augflow_dsl/layers/``.

* ``test_noise_pad``: an augment point at the spec's ``augment:`` that appends ``channels``
  channels of N(0, 1) noise e; log-weight -log N(e) (the ELBO term of an augment point whose q
  is the standard normal); inverse drops them. The noise is drawn through the steps' ``draw``
  hook (:func:`augflow_dsl.layers.base.draw`), so a model using it exports to ONNX.
* ``test_drop_tail``: a drop that hands the last ``channels`` channels to N(0, s^2), s = exp of a
  learned log-scale per dropped channel (initialised to ``scale``: ``channels`` parameters).
* ``test_two_conv_net``: a coupling net written as one layer description (3x3 conv -> ReLU ->
  zero-initialised 1x1 conv) and one forward; its counts and its module come from the description
  (:class:`~augflow_dsl.layers.net_modules.DescribedNet` builds it).

The op registrations and the layer registrations are removed after each test by a fixture, so
no other test sees them.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import pytest
import torch
from pydantic import Field
from torch import nn

import augflow_dsl as af
from augflow_dsl.layers import has_layer, implements, unregister
from augflow_dsl.layers.base import Step, draw
from augflow_dsl.layers.net_modules import DescribedNet
from augflow_dsl.ops.net_descriptions import Conv, Net
from augflow_dsl.layers.priors import normal_log_prob
from augflow_dsl.ops.supports import REAL, join
from augflow_dsl.ops.registry import (AUGMENT, AUGMENT_AT_INPUT, DROP, REGISTRY, SCORED_BY_FIXED, NetIO, NetOp, Op,
                                      OpArgs, OpShapeError, register)


# ---------------------------------------------------------------------------- ops
class NoisePad(Op):
    """Append ``channels`` channels of N(0, 1) noise."""

    name = "test_noise_pad"
    role = AUGMENT
    site = AUGMENT_AT_INPUT
    scored_by = SCORED_BY_FIXED  # N(0, 1), scored by the layer itself

    class Args(OpArgs):
        channels: int = Field(gt=0)

    def out_shape(self, a, shape, env):
        return (shape[0] + a.channels, *shape[1:])

    def dims_added(self, a, shape, env):
        return a.channels * math.prod(shape[1:])

    def joined(self, a, s, added):
        """cat(x, e): Gaussian noise takes every real value (for the audit's support check)."""
        return join(s, REAL)

    def params(self, a, shape, env):
        return 0


class DropTail(Op):
    """Drop the last ``channels`` channels to N(0, s^2), s learned per channel."""

    name = "test_drop_tail"
    role = DROP

    class Args(OpArgs):
        channels: int = Field(gt=0)
        scale: float = Field(default=1.0, gt=0)

    def out_shape(self, a, shape, env):
        if a.channels >= shape[0]:
            raise OpShapeError(f"cannot drop {a.channels} of {shape[0]} channels: keep at least one")
        return (shape[0] - a.channels, *shape[1:])

    def params(self, a, shape, env):
        return a.channels


class TwoConvNet(NetOp):
    """3x3 conv -> ReLU -> zero-initialised 1x1 conv, ``filters`` wide."""

    name = "test_two_conv_net"

    class Args(OpArgs):
        filters: int = Field(gt=0)

    def check_io(self, a, io):
        if io.h == 0 or io.context:
            raise OpShapeError("test_two_conv_net reads images and no context")

    def describe(self, a, io):
        n = io.positions
        return Net((("conv1", Conv(io.c_in, a.filters, 3, n)),
                    ("conv2", Conv(a.filters, io.c_out, 1, n, init="zero"))))


# ---------------------------------------------------------------------------- layers
@implements(NoisePad)
class NoisePadLayer(Step):
    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(args.channels)

    def forward(self, x, context=None):
        e = draw(self, "randn", (x.shape[0], self.channels, *x.shape[2:]), x)
        return torch.cat([x, e], 1), -normal_log_prob(e)

    def inverse(self, y, context=None):
        return y[:, :-self.channels]


@implements(DropTail)
class DropTailLayer(Step):
    def __init__(self, channels: int, scale: float, image: bool):
        super().__init__()
        self.channels = channels
        self.log_scale = nn.Parameter(torch.full((channels, 1, 1) if image else (channels,), math.log(scale)))

    @classmethod
    def from_op(cls, args, shape, env, nets):
        return cls(args.channels, args.scale, len(shape) == 3)

    def forward(self, x, context=None):
        kept, dropped = x[:, :-self.channels], x[:, -self.channels:]
        self.draws.record(dropped)
        return kept, normal_log_prob(dropped, 0.0, self.log_scale)

    def inverse(self, kept, context=None):
        z = self.draws.replay()
        if z is None:
            noise = draw(self, "randn", lambda: torch.randn(kept.shape[0], self.channels, *kept.shape[2:],
                                                            dtype=kept.dtype, device=kept.device))
            z = self.draws.temperature * torch.exp(self.log_scale) * noise
        return torch.cat([kept, z], 1)


@implements(TwoConvNet)
class TwoConvNetLayer(DescribedNet):
    """Built from the op's description (children conv1, conv2); only the forward is written."""

    def forward(self, x, context=None):
        return self.conv2(torch.relu(self.conv1(x)))


NEW_OPS = ((NoisePad, NoisePadLayer), (DropTail, DropTailLayer), (TwoConvNet, TwoConvNetLayer))


@contextmanager
def extension_ops():
    """The new ops registered, and their layers (the decorators registered them when this file
    was imported; an earlier test's clean-up removed them); both removed after."""
    for op, layer in NEW_OPS:
        register(op)
        implements(op)(layer)
    try:
        yield
    finally:
        for op, _ in NEW_OPS:
            REGISTRY.pop(op.name)
            unregister(op)


@pytest.fixture
def new_ops():
    with extension_ops():
        yield


SPEC = """
flow: extended
data: {shape: [2, 4, 4], bits: 3}
augment: test_noise_pad(channels: 2)
module step: [actnorm, conv1x1, affine_coupling(net: glow_net(filters: 6))]
stages: [2 * step, test_drop_tail(channels: 2, scale: 0.5), 2 * step]
prior: learned_normal
"""


def test_new_ops_check_and_count(new_ops):
    report = af.check(af.loads(SPEC))
    assert report.valid, report.errors
    # data 2x4x4 = 32, + 2x4x4 noise = 64 dims; the drop scores 2x4x4 = 32, the prior 2x4x4 = 32
    assert (report.dims.data, report.dims.augmented, report.dims.prior) == (32, 32, 64)
    drop = next(s for s in report.stages if s.dropped)
    assert drop.dropped == 32 and drop.dims_out == 32
    rows = {(r.op, r.role): r for r in report.nodes}
    assert ("test_noise_pad", AUGMENT) in rows and rows["test_drop_tail", DROP].params == 2


def test_new_ops_refused_where_they_cannot_stand(new_ops):
    bad = SPEC.replace("test_drop_tail(channels: 2, scale: 0.5)", "test_drop_tail(channels: 4)")
    report = af.check(af.loads(bad))
    assert not report.valid and "keep at least one" in report.errors[0]["message"]
    misplaced = SPEC.replace("augment: test_noise_pad(channels: 2)\n", "").replace(
        "2 * step, test_drop_tail", "test_noise_pad(channels: 2), 2 * step, test_drop_tail")
    report = af.check(af.loads(misplaced))
    assert not report.valid and "augment point" in report.errors[0]["message"]


def test_new_ops_compile_and_run(new_ops, seed):
    spec = af.loads(SPEC)
    model = af.compile(spec).double()
    assert model.spec is spec
    assert sum(p.numel() for p in model.parameters()) == af.check(spec).parameters.total
    x = torch.randint(0, 8, (5, 2, 4, 4)).double()
    model.initialize(x)
    model.eval()
    lp = model.log_prob(x)
    assert lp.shape == (5,) and torch.isfinite(lp).all(), f"seed {seed}"
    latents = model.encode(x)
    assert latents.z.shape == (5, 2, 4, 4) and [d.shape for d in latents.dropped] == [(5, 2, 4, 4)]
    assert torch.equal(model.decode(latents), x), f"decode(encode(x)) must give x back (seed {seed})"
    s = model.sample(3, 0.8)
    assert s.shape == (3, 2, 4, 4) and torch.isfinite(s).all() and s.min() >= 0 and s.max() <= 7


def test_new_net_is_one_description_and_one_forward(new_ops):
    """The report's count, numel() and the MACs come from the description; the coupling it serves
    starts at the identity (zero-initialised last conv)."""
    spec = af.loads(SPEC.replace("glow_net(filters: 6)", "test_two_conv_net(filters: 5)"))
    report = af.check(spec)
    assert report.valid, report.errors
    nets = [r for r in report.nodes if r.op == "test_two_conv_net"]
    io = NetIO(2, 4, 4, 4)  # the first coupling: 4 channels, half read, (shift, scale) for the other half
    assert nets[0].params == (9 * 2 * 5 + 5) + (5 * 4 + 4) and nets[0].macs == (9 * 2 * 5 + 5 * 4) * 16
    assert TwoConvNet().net_params(TwoConvNet.Args(filters=5), io) == nets[0].params
    model = af.compile(spec)
    assert sum(p.numel() for p in model.parameters()) == report.parameters.total
    x = torch.randn(3, 4, 4, 4)
    coupling = next(m for m in model.modules() if isinstance(m, TwoConvNetLayer))
    assert torch.count_nonzero(coupling(x[:, :2])) == 0


def test_new_ops_are_gone_after_the_fixture():
    with extension_ops():
        assert all(op.name in REGISTRY and has_layer(op) for op, _ in NEW_OPS)
    assert not {cls.name for cls, _ in NEW_OPS} & set(REGISTRY)
    assert not any(has_layer(op) for op, _ in NEW_OPS)
