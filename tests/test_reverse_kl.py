"""FlowModel.rsample_and_log_prob and the reverse-KL example (examples/reverse_kl.py, issue 23)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import augflow_dsl as af
from augflow_dsl.layers.base import NoiseFeed, feeding

from conftest import load_example

ROOT = Path(__file__).resolve().parents[1]

# A tiny continuous 2-D flow with every path of the inverse plan the example uses: actnorm, an affine and a
# spline coupling (one hidden layer of 4 units each), a reversal, the normal prior.
TINY = """flow: tiny
data: {shape: [2]}
stages: [actnorm, affine_coupling(net: mlp(hidden: 4, layers: 1)), reverse,
         rq_spline_coupling(net: mlp(hidden: 4, layers: 1), bins: 3, bound: 3)]
prior: normal
"""


@pytest.fixture(scope="module")
def rk():
    return load_example("reverse_kl")


def _off_init(model: nn.Module, seed: int, scale: float = 0.3) -> nn.Module:
    """Mark actnorm initialised (so that no pass re-initialises it), then move every parameter off its
    initialisation, so that no layer is the identity."""
    model.initialize(torch.randn(64, *model.data_shape, dtype=model._dtype()))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _tiny(seed: int = 0) -> nn.Module:
    return _off_init(af.compile(af.loads(TINY)).double(), seed)


# ---------------------------------------------------------------------------------------------- the API
@pytest.mark.parametrize("spec", ["examples/reverse_kl.flow", "specs/toy-glow3.flow", "specs/maf-toy.flow"])
def test_log_density_is_log_prob_of_the_samples(spec):
    """float64: the returned log-density equals log_prob of the returned samples, on flows moved off their
    identity init (spline, affine + 1x1 conv, MAF)."""
    model = _off_init(af.compile(ROOT / spec).double(), 1, scale=0.1).eval()
    torch.manual_seed(2)
    x, lp = model.rsample_and_log_prob(64)
    assert x.shape == (64, 2) and lp.shape == (64,) and x.dtype == lp.dtype == torch.float64
    assert x.requires_grad and lp.requires_grad
    assert x.std(0).min() > 0.1  # not a degenerate draw
    torch.testing.assert_close(lp, model.log_prob(x), rtol=0, atol=1e-9)


def test_log_density_is_change_of_variables_of_the_sampler():
    """Independent of log_prob: with z fed to the prior, x = g(z) and log q(x) = log N(z) - log|det dg/dz|,
    the Jacobian of the sampler by autograd (float64)."""
    model = _tiny(3).eval()
    z = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))

    def sampler(zz):
        with feeding(NoiseFeed([zz])):
            return model.rsample_and_log_prob(len(zz))

    x, lp = sampler(z)
    jac = torch.autograd.functional.jacobian(lambda zz: sampler(zz)[0], z)  # [6, 2, 6, 2]
    blocks = torch.stack([jac[i, :, i, :] for i in range(len(z))])
    expect = -0.5 * (z ** 2).sum(1) - math.log(2 * math.pi) - torch.linalg.slogdet(blocks).logabsdet
    assert not torch.allclose(x, z, atol=1e-3)  # the flow is not the identity
    torch.testing.assert_close(lp, expect, rtol=0, atol=1e-9)


def test_gradcheck_through_the_inverse_plan():
    """torch.autograd.gradcheck of (samples, log-density) as functions of one parameter tensor (the spline
    net's last layer, whose gradient passes the spline's inverse and forward), the noise fixed by re-seeding."""
    model = _tiny(5).eval()

    class Sampler(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, n):
            return self.m.rsample_and_log_prob(n)

    wrapper = Sampler(model)
    name = "m.steps.3.net.net.2.weight"
    w0 = dict(wrapper.named_parameters())[name].detach().clone().requires_grad_(True)

    def f(w):
        torch.manual_seed(6)
        return torch.func.functional_call(wrapper, {name: w}, (5,))

    torch.manual_seed(6)
    assert torch.randn(5, 2, dtype=torch.float64).abs().max() < 3  # the prior's z: inside the spline's bound
    assert torch.autograd.gradcheck(f, (w0,), eps=1e-6, atol=1e-6)
    jac = torch.autograd.functional.jacobian(f, w0)
    assert jac[0].abs().max() > 1e-2 and jac[1].abs().max() > 1e-2  # not a check of zero against zero


def test_refuses_integer_data_and_augmentation():
    with pytest.raises(ValueError, match=r"integer data \(5 bits\)"):
        af.compile(af.loads(TINY.replace("shape: [2]", "shape: [2], bits: 5"))).rsample_and_log_prob(4)
    with pytest.raises(ValueError, match="augmented dims"):
        af.compile(ROOT / "specs/toy-vflow3-10d.flow").rsample_and_log_prob(4)
    model = af.compile(af.loads(TINY))
    for n, t in [(0, 1.0), (2.5, 1.0), (True, 1.0), (4, 0.0)]:
        with pytest.raises(ValueError, match="n >= 1 and temperature > 0"):
            model.rsample_and_log_prob(n, temperature=t)


# ---------------------------------------------------------------------------------------------- the example
def test_targets_normalisers(rk):
    """log Z of each target by quadrature on a grid: the ring's mixture is normalised, the banana's Z is 2 pi a."""
    g = torch.linspace(-12, 12, 481, dtype=torch.float64)
    gx, gy = torch.meshgrid(g, g + 6, indexing="xy")  # the banana reaches up to y ~ 30 at x = 12 only in its tails
    pts = torch.stack([gx.flatten(), gy.flatten()], 1)
    cell = float(g[1] - g[0]) ** 2
    for t in rk.TARGETS.values():
        log_z = torch.logsumexp(t.log_density(pts), 0) + math.log(cell)
        assert abs(float(log_z) - t.log_z) < 1e-3, t.name


def test_kl_and_ess_estimates(rk):
    """q = p gives KL 0 and ESS 1; a known Gaussian pair gives the closed-form KL; ESS < 1 otherwise."""
    x = torch.randn(20000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    log_n = -0.5 * (x ** 2).sum(1) - math.log(2 * math.pi)
    kl, ess = rk.kl_and_ess(log_n, log_n + 1.5, log_z=1.5)  # p~ = e^1.5 N(0, I)
    assert abs(kl) < 1e-12 and abs(ess - 1) < 1e-12
    s = 2.0  # q = N(0, s^2 I), p = N(0, I): KL = 2 (s^2 / 2 - 1/2 - log s), ESS -> (2 - 1 / s^2) / s^2
    log_q = log_n - 2 * math.log(s)  # the density of s x
    log_p = -0.5 * ((s * x) ** 2).sum(1) - math.log(2 * math.pi)
    kl, ess = rk.kl_and_ess(log_q, log_p)
    assert abs(kl - 2 * (s ** 2 / 2 - 0.5 - math.log(s))) < 0.03, kl
    assert abs(ess - (2 - 1 / s ** 2) / s ** 2) < 0.03, ess


def test_short_run_lowers_kl_and_raises_ess(rk):
    """150 steps of batch 128 on the ring (about 5 s on one core): the mean KL of the last 10 batches is well
    below that of the first 10 (about 5.8 -> 0.7 nats), and the mean ESS well above (about 19% -> 39%)."""
    model = rk.make_model(seed=0)
    h = rk.train(model, rk.TARGETS["ring"], steps=150, batch=128)
    assert len(h.kl) == len(h.ess) == 150
    first_kl, last_kl = sum(h.kl[:10]) / 10, sum(h.kl[-10:]) / 10
    first_ess, last_ess = sum(h.ess[:10]) / 10, sum(h.ess[-10:]) / 10
    assert last_kl < first_kl - 2 and last_kl < 0.3 * first_kl, (first_kl, last_kl)
    assert last_ess > first_ess + 0.1, (first_ess, last_ess)


def test_mode_masses(rk):
    c = rk.ring_centres()
    x = torch.cat([c[0].repeat(90, 1), c[3].repeat(10, 1)]) + 0.01
    m = rk.mode_masses(x, c)
    assert m.sum() == 1 and m[0] == 0.9 and m[3] == 0.1 and (m[[1, 2, 4, 5, 6, 7]] == 0).all()


def test_cli_runs_and_refuses_bad_specs(rk, tmp_path, capsys):
    out = tmp_path / "fig.png"
    assert rk.main(["--steps", "3", "--batch", "16", "--every", "2", "--eval-samples", "200", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "final (200 fresh samples): KL = " in text and "modes covered" in text
    try:
        import matplotlib  # noqa: F401
        assert out.stat().st_size > 1000
    except ImportError:
        assert not out.exists()
    assert rk.main(["--spec", str(ROOT / "specs/toy-vflow3-10d.flow"), "--steps", "1"]) == 2
    assert "augmented dims" in capsys.readouterr().err
    assert rk.main(["--spec", str(ROOT / "specs/digits-small.flow")]) == 2
    assert "the targets are 2-D, but the spec's data has shape [1, 8, 8]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        rk.main(["--init-scale", "0"])
    assert rk.main(["--spec", str(ROOT / "specs/maf-toy.flow"), "--steps", "1", "--batch", "8",
                    "--eval-samples", "50", "--target", "banana"]) == 0
