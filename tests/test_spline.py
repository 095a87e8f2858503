"""rq_spline_coupling (Neural Spline Flows, Durkan et al. 2019): the spline against its defining
formula (eq. 4-5) at the knots and bin midpoints, monotonicity, the closed-form inverse (App. A),
nflows' ``unconstrained_rational_quadratic_spline`` (tails="linear") when nflows is installed, the
identity at initialisation, the argument checks, the memory rule against what autograd saves, and the
toy spec. The coupling's round trip, log-det and counts are in tests/test_conformance.py."""
from __future__ import annotations

import math

import pytest
import torch

import augflow_dsl as af
from augflow_dsl.compiler.model import layer_for
from augflow_dsl.layers.spline import derivative_shift, rq_spline
from augflow_dsl.ops.net_descriptions import Precision
from augflow_dsl.ops.registry import MemoryIn, OpCall, OpEnv, get

from conftest import SPECS_DIR

K, B = 6, 2.5


def _params(n: int, k: int = K, scale: float = 2.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(1234)
    return tuple(scale * torch.randn(n, m, generator=g, dtype=dtype) for m in (k, k, k - 1))


def _knots_by_hand(uw, uh, ud, bound=B, mw=1e-3, mh=1e-3, md=1e-3):
    """Knots (x^k, y^k) and derivatives d^k from the unnormalised parameters, in plain Python."""
    def knots(u, m):
        e = [math.exp(v) for v in u]
        frac = [m + (1 - m * len(u)) * v / sum(e) for v in e]
        out, acc = [-bound], 0.0
        for f in frac[:-1]:
            acc += f
            out.append(acc * 2 * bound - bound)
        return out + [bound]
    d = [1.0] + [md + math.log1p(math.exp(v)) for v in ud] + [1.0]
    return knots(uw, mw), knots(uh, mh), d


def test_spline_is_its_formula_at_knots_and_midpoints():
    """g(x^k) = y^k, g'(x^k) = d^k (eq. 4-5); at a bin's midpoint (xi = 1/2) eq. 4 gives
    y^k + h (s + d^k) / (4 s + d^{k+1} + d^k - 2 s), eq. 5 gives s^2 (d^{k+1} + 2 s + d^k) / (4 (s + q/4)^2)."""
    uw, uh, ud = _params(3)
    for row in range(3):
        xk, yk, d = _knots_by_hand(uw[row].tolist(), uh[row].tolist(), ud[row].tolist())
        pts, want, want_ld = [], [], []
        for k in range(K):
            w, h = xk[k + 1] - xk[k], yk[k + 1] - yk[k]
            s, q = h / w, d[k] + d[k + 1] - 2 * h / w
            pts += [xk[k], xk[k] + w / 2]
            want += [yk[k], yk[k] + h * (s / 4 + d[k] / 4) / (s + q / 4)]
            want_ld += [math.log(d[k]), math.log(s * s * (d[k + 1] / 4 + s / 2 + d[k] / 4) / (s + q / 4) ** 2)]
        pts.append(B), want.append(B), want_ld.append(0.0)
        x = torch.tensor(pts, dtype=torch.float64)
        n = len(pts)
        y, ld = rq_spline(x, uw[row].expand(n, K), uh[row].expand(n, K), ud[row].expand(n, K - 1), bound=B)
        assert torch.allclose(y, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)
        assert torch.allclose(ld, torch.tensor(want_ld, dtype=torch.float64), rtol=0, atol=1e-10)
        # the closed-form inverse returns the knots and midpoints, to what rounding y allows: eps |y| / g'
        # (one midpoint of these draws has g' ~ 1e-5)
        back, ld_inv = rq_spline(y, uw[row].expand(n, K), uh[row].expand(n, K), ud[row].expand(n, K - 1),
                                 bound=B, inverse=True)
        bound = 1e-12 + 10 * torch.finfo(x.dtype).eps * B / torch.exp(ld)
        assert ((back - x).abs() <= bound).all() and torch.allclose(ld_inv, -ld, rtol=0, atol=1e-10)


def test_spline_is_monotone_with_linear_tails_and_its_inverse_is_closed_form():
    uw, uh, ud = _params(1)
    x = torch.linspace(-2 * B, 2 * B, 4001, dtype=torch.float64)
    n = x.numel()
    p = (uw.expand(n, K), uh.expand(n, K), ud.expand(n, K - 1))
    y, ld = rq_spline(x, *p, bound=B)
    assert (y.diff() > 0).all()
    out = x.abs() > B
    assert torch.equal(y[out], x[out]) and torch.equal(ld[out], torch.zeros_like(ld[out]))
    assert y.abs().max() <= 2 * B and (y[~out].abs() <= B).all()
    # log-det is log g' (autograd), and the inverse undoes g in one closed-form evaluation
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(rq_spline(xg, *p, bound=B)[0].sum(), xg)
    assert torch.allclose(ld, torch.log(g), rtol=0, atol=1e-10)
    back, ld_inv = rq_spline(y, *p, bound=B, inverse=True)
    bound = 1e-12 + 10 * torch.finfo(x.dtype).eps * B / torch.exp(ld)
    assert ((back - x).abs() <= bound).all() and torch.allclose(ld_inv, -ld, rtol=0, atol=1e-10)


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_spline_matches_nflows(inverse):
    """Same unnormalised widths, heights and interior derivatives: the same outputs and log-dets as
    nflows' unconstrained_rational_quadratic_spline(tails="linear"), float64, inside and outside the bound."""
    pytest.importorskip("nflows")
    from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline as ref

    for k, bound, scale in [(8, 3.0, 2.0), (3, 1.0, 4.0), (16, 5.0, 1.0)]:
        uw, uh, ud = _params(4000, k, scale)
        x = torch.randn(4000, dtype=torch.float64, generator=torch.Generator().manual_seed(k)) * 1.5 * bound
        assert (x.abs() > bound).any() and (x.abs() <= bound).any()
        kw = dict(min_width=2e-3, min_height=1e-3, min_derivative=5e-3)
        got, got_ld = rq_spline(x, uw, uh, ud, inverse=inverse, bound=bound, **kw)
        want, want_ld = ref(x, uw, uh, ud, inverse=inverse, tails="linear", tail_bound=bound,
                            min_bin_width=kw["min_width"], min_bin_height=kw["min_height"],
                            min_derivative=kw["min_derivative"])
        assert (got - want).abs().max() < 1e-12, (k, (got - want).abs().max())
        assert (got_ld - want_ld).abs().max() < 1e-12, (k, (got_ld - want_ld).abs().max())


def _call(shape, **args) -> OpCall:
    net = OpCall("mlp", get("mlp").Args(hidden=5)) if len(shape) == 1 else OpCall("glow_net", get("glow_net").Args(
        filters=4))
    return OpCall("rq_spline_coupling", get("rq_spline_coupling").Args(net=net, **args))


def _coupling(shape, **args):
    return layer_for(_call(shape, **args), shape)


@pytest.mark.parametrize("shape, args", [((4,), {}), ((2, 4, 4), {"split": "checkerboard", "bound": 0.5}),
                                         ((3, 4, 4), {"bins": 3, "min_derivative": 0.1})])
def test_zero_net_output_is_the_identity(shape, args):
    """The net's zero-initialised last layer gives uniform bins and derivative 1 at every knot (the
    derivatives' shift c: min_derivative + softplus(c) = 1), so the coupling starts at the identity."""
    assert 1e-3 + torch.nn.functional.softplus(torch.tensor(derivative_shift(1e-3), dtype=torch.float64)) == \
        pytest.approx(1.0, abs=1e-15)
    layer = _coupling(shape, **args).double()
    x = 2 * torch.randn(5, *shape, dtype=torch.float64)
    y, ld = layer(x)
    assert torch.allclose(y, x, rtol=0, atol=1e-13) and ld.abs().max() < 1e-12
    back, ld_inv = layer.inverse_and_logdet(x)
    assert torch.allclose(back, x, rtol=0, atol=1e-13) and ld_inv.abs().max() < 1e-12


def test_argument_checks():
    Args = get("rq_spline_coupling").Args
    net = OpCall("mlp", get("mlp").Args(hidden=5))
    a = Args(net=net)
    assert (a.bins, a.bound, a.min_width, a.min_height, a.min_derivative) == (8, 3.0, 1e-3, 1e-3, 1e-3)
    for bad in ({"bins": 1}, {"bound": 0}, {"min_width": 0.2, "bins": 5}, {"min_height": 0.5}, {"min_derivative": 1}):
        with pytest.raises(ValueError):
            Args(net=net, **bad)
    # the net's output channels follow from bins: 3K - 1 per transformed channel
    op = get("rq_spline_coupling")
    (_, io), = op.nets(Args(net=net, bins=4), (5,), OpEnv()).values()
    assert (io.c_in, io.c_out) == (3, 2 * 11)


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_nsf_parameterisation_is_what_the_nsf_code_feeds_nflows(inverse):
    """``temperature`` T and ``shift_derivatives: false``: the coupling's map of x2 equals nflows'
    unconstrained_rational_quadratic_spline fed what bayesiains/nsf's PiecewiseRationalQuadraticCoupling-
    Transform feeds it (coupling.py:439-473): widths and heights of the net's output divided by T, the
    interior derivatives as they are; and the defaults differ from it (the shift c, no division)."""
    pytest.importorskip("nflows")
    from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline as ref

    k, t, shape = 4, 96 ** 0.5, (4, 3, 3)
    layer = _coupling(shape, bins=k, bound=1.5, temperature=t, shift_derivatives=False).double()
    default = _coupling(shape, bins=k, bound=1.5).double()
    g = torch.Generator().manual_seed(7)
    x2 = 2 * torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64)
    p = 3 * torch.randn(5, 2 * (3 * k - 1), 3, 3, generator=g, dtype=torch.float64)
    u = p.unflatten(1, (2, 3 * k - 1)).movedim(2, -1)  # grouped per channel, as nflows' coupling reshapes
    want, want_ld = ref(x2, u[..., :k] / t, u[..., k:2 * k] / t, u[..., 2 * k:], inverse=inverse, tails="linear",
                        tail_bound=1.5)
    got, got_ld = layer._map(x2, p, inverse)
    assert (x2.abs() > 1.5).any() and (x2.abs() <= 1.5).any()
    assert (got - want).abs().max() < 1e-12 and (got_ld - want_ld).abs().max() < 1e-12
    assert (default._map(x2, p, inverse)[0] - want).abs().max() > 1e-3


@pytest.mark.parametrize("shape, args", [((6,), {"bins": 3}), ((4, 4, 4), {"bins": 8}),
                                         ((2, 4, 4), {"split": "columns", "bins": 5}),
                                         ((4, 4, 4), {"bins": 4, "temperature": 9.8, "shift_derivatives": False})])
def test_memory_rule_is_what_autograd_saves(shape, args):
    """The op's own bytes (its rule minus what its net keeps) against the bytes autograd saves in one
    forward with the input and the net's output requiring grad, each storage once, x and the net's
    output (counted by the op and the net) excepted."""
    layer = _coupling(shape, **args).float()
    n = 4
    x = torch.randn(n, *shape, requires_grad=True)
    seen: dict[int, int] = {}
    net = {"in": False, "kept": set()}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if net["in"]:
            net["kept"].add(ptr)  # what the net keeps: its own rule counts it
        seen.setdefault(ptr, t.untyped_storage().nbytes())
        return t

    def after(_m, _i, out):
        net["in"], net["out"] = False, out.untyped_storage().data_ptr()
    layer.net.register_forward_pre_hook(lambda *_: net.update({"in": True}))
    layer.net.register_forward_hook(after)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x)
    x_kept = x.untyped_storage().data_ptr() in seen
    skip = {p.untyped_storage().data_ptr() for p in layer.parameters()} | net["kept"] | {
        x.untyped_storage().data_ptr(), net["out"]}
    got = sum(b for ptr, b in seen.items() if ptr not in skip) / n
    op, c = get("rq_spline_coupling"), _call(shape, **args)
    net_kept = c.args.net.definition.net_memory(c.args.net.args, op.nets(c.args, shape, OpEnv())["net"][1],
                                                Precision())
    kept = op.memory(c.args, shape, OpEnv(), MemoryIn(Precision(), nets={"net": net_kept}))
    assert kept.input == x_kept and kept.own == pytest.approx(got, rel=0.02), (kept.input, x_kept, kept.own, got)


def test_memory_estimate_of_the_toy_spec_is_what_autograd_saves():
    """The whole estimate's activations (graph/memory.py over the ops' rules) for specs/spline-moons.flow
    against autograd's saved tensors in one training forward, as tests/test_memory.py does for other specs."""
    from augflow_dsl.graph.memory import estimate
    from test_memory import _saved_bytes

    path = str(SPECS_DIR / "spline-moons.flow")
    est, got = estimate(path, batch=64).activations, _saved_bytes(path, 64)
    assert abs(est / got - 1) < 0.05, (est, got)


def test_toy_spec_checks_and_runs():
    path = str(SPECS_DIR / "spline-moons.flow")
    report = af.check(path)
    assert report.valid and not report.warnings
    torch.manual_seed(0)
    model = af.compile(path).double()
    assert sum(p.numel() for p in model.parameters()) == report.parameters.total
    x = 3 * torch.randn(64, 2, dtype=torch.float64)
    model.initialize(x)
    lp = model.log_prob(x)
    assert torch.isfinite(lp).all()
