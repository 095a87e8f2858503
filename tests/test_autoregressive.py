"""maf / iaf (ops/autoregressive.py, layers/autoregressive.py): the MADE's masks make each output
parameter depend only on earlier inputs (its Jacobian strictly triangular), the flow's Jacobian is
triangular, the zero-initialised output layer starts the flow at the identity, the directions cost
one MADE pass and D passes as documented, and what the op refuses."""
from __future__ import annotations

import pytest
import torch

import augflow_dsl as af
from augflow_dsl.compiler.model import layer_for
from augflow_dsl.layers.autoregressive import MADE
from augflow_dsl.ops.autoregressive import made_degrees, made_masks
from augflow_dsl.ops.registry import OpCall, OpEnv, get

from conftest import SPECS_DIR

D = 5


pytestmark = pytest.mark.usefixtures("float64")


def _layer(name, perturb=True, **args):
    layer = layer_for(OpCall(name, get(name).Args(**{"hidden": 9, **args})), (D,))
    if perturb:
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(0.3 * torch.randn_like(p))
    return layer.eval()


def _order(reverse):
    """Dimension indices in degree order."""
    return list(range(D))[::-1] if reverse else list(range(D))


def test_degrees_are_deterministic_and_cycle():
    assert made_degrees(4, 7, 2) == [[1, 2, 3, 4], [1, 2, 3, 1, 2, 3, 1], [1, 2, 3, 1, 2, 3, 1]]
    assert made_degrees(3, 4, 1, reverse=True) == [[3, 2, 1], [1, 2, 1, 2]]
    assert made_degrees(1, 3, 1) == [[1], [0, 0, 0]]  # D = 1: hidden units read nothing
    masks = made_masks(3, 4, 1, 2)
    assert [len(m) for m in masks] == [4, 6] and [len(m[0]) for m in masks] == [3, 4]
    # output unit p * D + i reads hidden units of degree < i + 1
    assert masks[1][0] == [0, 0, 0, 0] and masks[1][2] == [1, 1, 1, 1] and masks[1][3] == masks[1][0]


SPLINE = {"transform": "rq_spline", "bins": 3, "bound": 1.5}


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("transform", [{}, SPLINE], ids=["affine", "rq_spline"])
def test_made_jacobian_is_strictly_triangular(layers, reverse, transform, seed):
    """d(params_i)/d(x_j) == 0 unless x_j comes before x_i in degree order, for every block
    (affine: mu, alpha; rq_spline: 3 bins - 1); nonzero somewhere below the diagonal."""
    made = _layer("maf", hidden=16, layers=layers, reverse=reverse, **transform).made
    x = torch.randn(4, D)  # |d params / d x| summed over 4 points: a ReLU dead at one point proves nothing
    jac = torch.autograd.functional.jacobian(made, x).abs().sum((0, 2))  # [per_dim D, D]
    pos = {dim: k for k, dim in enumerate(_order(reverse))}
    assert jac.shape == ((3 * 3 - 1 if transform else 2) * D, D)
    below = []
    for block in range(jac.shape[0] // D):
        j = jac[block * D:(block + 1) * D]
        for i in range(D):
            for k in range(D):
                if pos[k] >= pos[i]:
                    assert j[i, k] == 0, (block, i, k, f"seed {seed}")
        below += [j[i, k] for i in range(D) for k in range(D) if pos[k] < pos[i]]
    assert any(v != 0 for v in below), f"seed {seed}"


@pytest.mark.parametrize("name", ["maf", "iaf"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("transform", [{}, SPLINE], ids=["affine", "rq_spline"])
def test_flow_jacobian_is_triangular(name, reverse, transform, seed):
    """du/dx is lower triangular (upper with ``reverse``) with a nonzero diagonal and something below it;
    its log-det is the diagonal's (-sum alpha for an affine maf)."""
    layer = _layer(name, reverse=reverse, **transform)
    x = torch.randn(1, D) * (0.5 if transform else 1.0)  # inside the spline's bound: every element depends on others
    jac = torch.autograd.functional.jacobian(lambda t: layer(t)[0][0], x)[:, 0]
    tri = torch.tril(jac) if not reverse else torch.triu(jac)
    assert torch.equal(jac, tri), f"seed {seed}"
    assert (torch.diagonal(jac) != 0).all() and (jac - torch.diag(torch.diagonal(jac))).abs().sum() > 0
    assert torch.allclose(layer(x)[1], torch.diagonal(jac).abs().log().sum()[None], rtol=1e-12), f"seed {seed}"
    if name == "maf" and not transform:
        _, alpha = layer.made(x).chunk(2, 1)
        assert torch.allclose(layer(x)[1], -alpha.sum(1), rtol=1e-12)
        assert torch.allclose(torch.diagonal(jac), torch.exp(-alpha[0]), rtol=1e-12)


@pytest.mark.parametrize("name", ["maf", "iaf"])
@pytest.mark.parametrize("transform", [{}, SPLINE], ids=["affine", "rq_spline"])
def test_starts_at_the_identity(name, transform):
    """Zero output layer: affine exactly the identity; the spline uniform bins with unit derivatives
    (the identity to rounding)."""
    layer = _layer(name, perturb=False, **transform)
    assert all(torch.count_nonzero(p) == 0 for p in layer.made.linears[-1].parameters())
    x = torch.randn(4, D)
    same = (lambda a, b: torch.allclose(a, b, rtol=0, atol=1e-14)) if transform else torch.equal
    y, ld = layer(x)
    assert same(y, x) and same(ld, torch.zeros(4))
    back, ld = layer.inverse_and_logdet(x)
    assert same(back, x) and same(ld, torch.zeros(4))


def test_a_compiled_flow_starts_at_the_identity():
    spec = af.load(SPECS_DIR / "maf-toy.flow")
    model = af.compile(spec).double().eval()
    assert sum(p.numel() for p in model.parameters()) == af.check(spec).parameters.total
    x = torch.randn(6, 2)
    assert torch.allclose(model.log_prob(x), torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(1), rtol=1e-12)


@pytest.mark.parametrize("name, density, sampling", [("maf", 1, D), ("iaf", D, 1)])
def test_passes_per_direction(name, density, sampling):
    """maf: density one MADE pass, sampling D; iaf the other way round; the MACs count the density's."""
    layer = _layer(name)
    calls = []
    layer.made.register_forward_hook(lambda *_: calls.append(1))
    y, _ = layer(torch.randn(2, D))
    assert len(calls) == density
    calls.clear()
    layer.inverse(y)
    assert len(calls) == sampling
    a = get(name).Args(hidden=9)
    assert get(name).macs(a, (D,), OpEnv()) == density * get("maf").macs(a, (D,), OpEnv())


def test_masked_weights_are_parameters_and_get_zero_gradient():
    layer = _layer("maf")
    layer(torch.randn(3, D))[0].sum().backward()
    for i, lin in enumerate(layer.made.linears):
        mask = getattr(layer.made, f"mask{i}")
        assert lin.weight.shape == mask.shape and torch.equal(lin.weight.grad * (1 - mask), torch.zeros_like(mask))
    assert not any(k.startswith("made.mask") for k in layer.state_dict())


@pytest.mark.parametrize("text, phrase", [
    ("maf(hidden: 8, transform: spline)", "transform"),
    ("maf(hidden: 8, transform: rq_spline, bins: 1)", "bins"),
    ("iaf(hidden: 0)", "hidden"),
])
def test_bad_arguments_are_refused(text, phrase):
    spec = f"flow: t\ndata: {{shape: [3]}}\nstages: [{text}]\nprior: normal\n"
    with pytest.raises(af.SpecError, match=phrase):
        af.check(af.loads(spec))


def test_images_are_refused():
    spec = "flow: t\ndata: {shape: [2, 4, 4]}\nstages: [maf(hidden: 8)]\nprior: normal\n"
    report = af.check(af.loads(spec))
    assert not report.valid and "vector data" in report.errors[0]["message"]


@pytest.mark.parametrize("transform", ["affine", "rq_spline"])
@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_memory_rule_meets_what_autograd_saves(name, transform, tmp_path):
    """The op's memory rule against the tensors autograd keeps over a training forward (as
    tests/test_memory.py does for the bundled specs): within 5%."""
    from augflow_dsl.graph.memory import estimate
    from test_memory import _saved_bytes

    path = tmp_path / "ar.flow"
    path.write_text(f"flow: ar\ndata: {{shape: [4]}}\nstages: [{name}(hidden: 16, transform: {transform}), "
                    f"{name}(hidden: 16, transform: {transform}, reverse: true)]\nprior: normal\n")
    torch.set_default_dtype(torch.float32)
    est = estimate(path, batch=32).activations
    got = _saved_bytes(path, 32)
    assert abs(est / got - 1) < 0.05, (est, got)
