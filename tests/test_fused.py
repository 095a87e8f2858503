"""The fused plan (compiler/fused.py): adjacent constant-Jacobian steps composed into one affine map,
and repeated step blocks run as compiled regions, give the log-likelihood, gradients and samples of
the plain plan (float64: to rounding)."""
from __future__ import annotations

import pytest
import torch

import augflow_dsl as af
from augflow_dsl.compiler.fused import AffineRun, Region, compile_steps, regions
from augflow_dsl.language.load import loads
from augflow_dsl.layers.linear import Conv1x1
from augflow_dsl.layers.normalize import ActNorm
from augflow_dsl.layers.permute import Reverse, Shuffle

IMAGE = """
flow: fused-image
data: {shape: [2, 8, 8]}
module step: [actnorm, conv1x1(param: lu), shuffle(seed: 3), reverse, conv1x1(param: full, bias: true),
              affine_coupling(net: glow_net(filters: 8))]
stages: [squeeze, 2 * step, factor_out, 2 * step]
prior: normal
"""
VECTOR = """
flow: fused-vector
data: {shape: [3]}
module step: [actnorm, conv1x1(param: lu, bias: true), affine_coupling(net: mlp(hidden: 8, layers: 1))]
stages: [3 * step]
prior: normal
"""


def _model(text: str, x: torch.Tensor) -> af.FlowModel:
    torch.manual_seed(0)
    m = af.compile(loads(text)).double()
    m.initialize(x)
    with torch.no_grad():  # move every net and map off its zero / identity init
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def _unfused(m):
    m._run = m.plan
    return m


@pytest.mark.parametrize("text, shape, runs", [(IMAGE, (2, 8, 8), 4), (VECTOR, (3,), 0)], ids=["image", "vector"])
def test_fused_plan_matches_the_plain_plan(text, shape, runs):
    torch.manual_seed(1)
    x = torch.randn(5, *shape, dtype=torch.float64)
    m = _model(text, x)
    fused = [s for s in m._run if isinstance(s.layer, AffineRun)]
    assert len(fused) == runs and len(m._run) == len(m.plan) - sum(len(s.layer.layers) - 1 for s in fused)
    lp = m.log_prob(x)
    lp.sum().backward()
    grads = [p.grad.clone() for p in m.parameters()]
    m.eval()
    torch.manual_seed(2)
    s = m.sample(4)
    ref = _unfused(m)
    ref.zero_grad()
    ref.train()
    lp_ref = ref.log_prob(x)
    lp_ref.sum().backward()
    assert torch.allclose(lp, lp_ref, atol=1e-10, rtol=1e-10)
    assert all(torch.allclose(g, p.grad, atol=1e-10, rtol=1e-8) for g, p in zip(grads, ref.parameters()))
    ref.eval()
    torch.manual_seed(2)
    assert torch.allclose(s, ref.sample(4), atol=1e-10)


def test_affine_run_round_trip_and_logdet():
    torch.manual_seed(0)
    shape = (4, 3, 3)
    layers = [Reverse(), ActNorm(shape), Conv1x1(shape, "lu", bias=True), Shuffle([2, 0, 3, 1]),
              Conv1x1(shape, "full"), ActNorm(shape)]
    x = torch.randn(6, *shape, dtype=torch.float64)
    for layer in layers:
        layer.double()
        layer(x)  # actnorm's data-dependent init, then move everything off identity
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(0.1 * torch.randn_like(p))
    run = AffineRun(layers)
    y, ld = run(x)
    y_ref, ld_ref = x, 0
    for layer in layers:
        y_ref, l = layer(y_ref)
        ld_ref = ld_ref + l
    assert torch.allclose(y, y_ref, atol=1e-12) and torch.allclose(ld, ld_ref, atol=1e-12)
    back, ld_inv = run.inverse_and_logdet(y)
    assert torch.allclose(back, x, atol=1e-10) and torch.allclose(ld_inv, -ld, atol=1e-10)


def test_actnorm_init_runs_on_its_own_input():
    """A fresh model's first training pass initialises every actnorm from what reaches it."""
    torch.manual_seed(1)
    x = torch.randn(16, 2, 8, 8, dtype=torch.float64) * 3 + 1
    torch.manual_seed(0)
    a = af.compile(loads(IMAGE)).double()
    torch.manual_seed(0)
    b = _unfused(af.compile(loads(IMAGE)).double())
    a.initialize(x), b.initialize(x)
    assert torch.equal(torch.cat([p.flatten() for p in a.parameters()]), torch.cat([p.flatten() for p in b.parameters()]))


def test_regions_and_compiled_steps():
    torch.manual_seed(1)
    x = torch.randn(4, 3, dtype=torch.float64)
    m = _model(VECTOR, x)
    assert regions(m._run) == [(0, 3, 3)]  # [actnorm, 1x1, coupling] three times; the prior stays eager
    lp = m.log_prob(x)
    torch.manual_seed(2)
    s = m.eval().sample(3)
    # the regions' plumbing without torch.compile's minute of compilation (the bench times the real one)
    c = compile_steps(m, compiler=lambda f: f)
    assert sum(isinstance(st.layer, Region) for st in c._run) == 3
    c.train()
    assert torch.allclose(c.log_prob(x), lp, atol=1e-12)
    torch.manual_seed(2)
    assert torch.allclose(c.eval().sample(3), s, atol=1e-12)
