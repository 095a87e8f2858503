"""Augment points: append dims to the flow's state; their inverse drops them."""
from __future__ import annotations

from pydantic import Field

from .net_descriptions import Act, Kept
from .registry import (AUGMENT, AUGMENT_AT_BLOCK, AUGMENT_AT_INPUT, SCORED_BY_NET, MemoryIn, NetIO, Op, OpArgs, OpCall,
                       QFlow, get, register)
from .shapes import need_image, numel
from .supports import REAL, join


def _default_g() -> OpCall:
    op = get("cross_unit_net")
    return OpCall("cross_unit_net", op.Args())


@register
class CrossUnit(Op):
    """DenseFlow cross-unit coupling (eq. 6-9, flow_modules.py:67-147): append ``growth``
    channels e' = mu + sigma * e, e ~ N(0, I), (mu, log sigma) from g(z_<i) with
    log sigma = 2 tanh(u/2). It contributes log|diag sigma| - log N(e) to the ELBO (eq. 9);
    the inverse drops the channels and never evaluates g. ``env.context`` is the shape g reads:
    cat(block input, earlier unit outputs)."""

    summary = "DenseFlow cross-unit coupling: append `growth` channels of noise shaped by g(earlier units)"
    equation = "DenseFlow (Grcic et al. 2021) eq. 6-9; DenseFlow flow_modules.py:67-147"
    shape_rule = "C x H x W -> (C + growth) x H x W; g reads cat(block input, earlier unit outputs) at H x W"

    name = "cross_unit"
    role = AUGMENT
    site = AUGMENT_AT_BLOCK
    scored_by = SCORED_BY_NET

    class Args(OpArgs):
        growth: int = Field(gt=0, description="channels appended (DenseFlow's growth rate)")
        net: OpCall = Field(default_factory=_default_g, description=(
            "the g-network computing (mu, log sigma) from the earlier representations of the block"))

    def _io(self, a, shape, env):
        need_image(shape, self.name)
        reads = env.context or shape
        return NetIO(c_in=reads[0], c_out=2 * a.growth, h=shape[1], w=shape[2])

    def nets(self, a, shape, env):
        return {"g": (a.net, self._io(a, shape, env))}

    def out_shape(self, a, shape, env):
        io = self._io(a, shape, env)
        get(a.net.op).check_io(a.net.args, io)
        return (shape[0] + a.growth, *shape[1:])

    def dims_added(self, a, shape, env):
        return a.growth * shape[1] * shape[2]

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """tanh and exp of the log-scale and the noise e (exp(log sigma) * e keeps it), growth
        channels each; g keeps its input, the context the plan hands the step (``context``)."""
        b = m.precision.flow
        g = m.nets.get("g")
        return Kept(Act(numel(self.out_shape(a, shape, env)), b), own=3 * a.growth * shape[1] * shape[2] * b,
                    context=g is not None and g.input)

    def params(self, a, shape, env):
        return get(a.net.op).net_params(a.net.args, self._io(a, shape, env))

    def macs(self, a, shape, env):
        return get(a.net.op).net_macs(a.net.args, self._io(a, shape, env))

    def joined(self, a, s, added):
        """cat(x, e'): e' = mu + sigma * e is Gaussian, so every value is possible."""
        return join(s, REAL)

    def inverse_image(self, a, s):
        """The inverse drops e': the kept channels are what it was given."""
        return s


@register
class InputAugment(Op):
    """VFlow input augmentation (Chen et al. 2020, eq. 4-7): z ~ q(z | x) with ``channels``
    channels at the data's resolution, concatenated after x (vflow run_cifar10.py:226-230);
    the ELBO gains -log q(z | x). The inverse keeps the first C channels."""

    summary = "VFlow input augmentation: append `channels` channels z ~ q(z | x) to the data"
    equation = "VFlow (Chen et al. 2020) eq. 4-7; vflow run_cifar10.py:226-230"
    shape_rule = ("C x H x W -> (C + channels) x H x W (vectors: D -> D + channels); q's flow must end at channels x H "
                  "x W")

    name = "input"
    role = AUGMENT
    site = AUGMENT_AT_INPUT

    class Args(OpArgs):
        channels: int = Field(gt=0, description="channels of z appended to the data (VFlow's D_Z)")
        q: QFlow = Field(description="the q-network q(z | x) that samples z, defined with 'q NAME: ...'")

    def out_shape(self, a, shape, env):
        if len(shape) == 3:
            return (shape[0] + a.channels, *shape[1:])
        return (shape[0] + a.channels,)

    def aug_shape(self, a, shape) -> tuple:
        return (a.channels, *shape[1:])

    def qnets(self, a, shape, env):
        return {"q": (a.q, self.aug_shape(a, shape), "q")}

    def dims_added(self, a, shape, env):
        n = a.channels
        for s in shape[1:]:
            n *= s
        return n

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """cat(x, z) keeps nothing (its q-network's tensors are counted from the graph)."""
        return Kept(Act(numel(self.out_shape(a, shape, env)), m.precision.flow))

    def joined(self, a, s, added):
        """cat(x, z): x's set and q's sample's set together."""
        return join(s, added)

    def inverse_image(self, a, s):
        """The inverse keeps the first C channels: what it was given."""
        return s
