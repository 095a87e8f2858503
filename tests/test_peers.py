"""One coupling of each peer library is ONE ``affine_coupling(...)`` of ours (issue 22).

nflows' ``AffineCouplingTransform`` (scale = sigmoid(h + 2) + 1e-3, shifts in the first half of the
net's output, y2 = x2 s + t) is ``affine_coupling(scale: sigmoid, eps: 1e-3, layout: halves,
first: shift)``; normflows' ``AffineCouplingBlock(scale_map="sigmoid")``, whose density direction is
its ``inverse`` (y2 = (x2 - t) sigmoid(h + 2), shift and scale interleaved, shift first), is
``affine_coupling(scale: sigmoid, order: shift_then_scale, first: shift)``. For each: equal
parameter counts (ours analytic and numel, theirs numel), the weights copied one to one (same
shapes, same order), perturbed off any zero init, give the same outputs and log-det in float64,
forward and inverse. Skipped where the peer is not installed (``pip install -e .[peers]``).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from augflow_dsl.compiler.plan import layer_for
from augflow_dsl.ops.registry import OpEnv, get
from conftest import op_call


pytestmark = pytest.mark.usefixtures("float64")


call = op_call


def _ours(shape, hidden, **args):
    c = call("affine_coupling", net=call("mlp", hidden=hidden, layers=1), **args)
    return layer_for(c, shape), get("affine_coupling").params(c.args, shape, OpEnv())


def _copy(theirs: nn.Module, ours: nn.Module, seed: int):
    """Draw fresh weights into the peer's module and copy them, one tensor to one, into ours."""
    g = torch.Generator().manual_seed(seed)
    mine, peer = list(ours.parameters()), list(theirs.parameters())
    assert [p.shape for p in mine] == [p.shape for p in peer]
    with torch.no_grad():
        for a, b in zip(mine, peer):
            b.copy_(0.5 * torch.randn(b.shape, generator=g))
            a.copy_(b)


class _NflowsNet(nn.Module):
    """nflows calls its transform net with (inputs, context)."""

    def __init__(self, c_in, hidden, c_out):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(c_in, hidden), nn.ReLU(), nn.Linear(hidden, c_out))

    def forward(self, x, context=None):
        return self.net(x)


def test_nflows_affine_coupling_is_one_affine_coupling(seed):
    coupling = pytest.importorskip("nflows.transforms.coupling")
    features, hidden = 5, 7
    theirs = coupling.AffineCouplingTransform(torch.tensor([-1, -1, -1, 1, 1]),  # identity: the first ceil(5/2)
                                              lambda i, o: _NflowsNet(i, hidden, o))
    ours, analytic = _ours((features,), hidden, scale="sigmoid", eps=1e-3, layout="halves", first="shift")
    n_theirs = sum(p.numel() for p in theirs.parameters())
    assert sum(p.numel() for p in ours.parameters()) == analytic == n_theirs
    _copy(theirs, ours, seed)
    x = torch.randn(16, features, generator=torch.Generator().manual_seed(seed + 1)) * 2
    y_t, ld_t = theirs(x)
    y_o, ld_o = ours(x)
    assert torch.allclose(y_o, y_t, rtol=0, atol=1e-12) and torch.allclose(ld_o, ld_t, rtol=0, atol=1e-12)
    x_t, ild_t = theirs.inverse(y_t)
    x_o, ild_o = ours.inverse_and_logdet(y_o)
    assert torch.allclose(x_o, x_t, rtol=0, atol=1e-12) and torch.allclose(ild_o, ild_t, rtol=0, atol=1e-12)
    assert not torch.allclose(y_o, x), "the coupling is the identity: the test proves nothing"


def test_normflows_affine_coupling_is_one_affine_coupling(seed):
    nf = pytest.importorskip("normflows")
    features, hidden = 4, 6
    theirs = nf.flows.AffineCouplingBlock(nf.nets.MLP([features // 2, hidden, features]), scale=True,
                                          scale_map="sigmoid", split_mode="channel")
    ours, analytic = _ours((features,), hidden, scale="sigmoid", order="shift_then_scale", first="shift")
    n_theirs = sum(p.numel() for p in theirs.parameters())
    assert sum(p.numel() for p in ours.parameters()) == analytic == n_theirs
    _copy(theirs, ours, seed)
    x = torch.randn(16, features, generator=torch.Generator().manual_seed(seed + 1)) * 2
    z_t, ld_t = theirs.inverse(x)  # normflows' density direction: x -> z
    z_o, ld_o = ours(x)
    assert torch.allclose(z_o, z_t, rtol=0, atol=1e-12) and torch.allclose(ld_o, ld_t, rtol=0, atol=1e-12)
    x_t, sld_t = theirs(z_t)  # its sampling direction: z -> x
    x_o, sld_o = ours.inverse_and_logdet(z_o)
    assert torch.allclose(x_o, x_t, rtol=0, atol=1e-12) and torch.allclose(sld_o, sld_t, rtol=0, atol=1e-12)
    assert not torch.allclose(z_o, x), "the coupling is the identity: the test proves nothing"
