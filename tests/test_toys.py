"""2-D toy data (runtime/toys.py) and the VFlow toy-table trainer (examples/vflow_toy_table.py)."""
from __future__ import annotations

import copy
import json
import math
import zlib
from pathlib import Path

import pytest
import torch

from augflow_dsl.runtime.toys import CHECKERBOARD_LOG_DENSITY, SPLIT_SIZES, TOY_SETS, toy_points, toy_split

from conftest import load_example

ROOT = Path(__file__).resolve().parents[1]


def _seed(request) -> int:
    return zlib.crc32(request.node.nodeid.encode())


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def table():
    return load_example("vflow_toy_table")


@pytest.mark.parametrize("name", TOY_SETS)
def test_points_shape_and_determinism(name, request):
    s = _seed(request)
    a = toy_points(name, 1000, _gen(s))
    assert a.shape == (1000, 2) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, toy_points(name, 1000, _gen(s)))
    assert not torch.equal(a, toy_points(name, 1000, _gen(s + 1)))


def test_split_sizes_fixed_and_distinct():
    train, test = toy_split("checkerboard", "train"), toy_split("checkerboard", "test")
    assert train.shape == (SPLIT_SIZES["train"], 2) and test.shape == (SPLIT_SIZES["test"], 2)
    assert torch.equal(test, toy_split("checkerboard", "test", seed=0))
    assert not torch.equal(test, train[: len(test)])
    assert not torch.equal(test, toy_split("checkerboard", "test", seed=1))


def test_bad_name_and_split_are_clear():
    with pytest.raises(ValueError, match="unknown toy data set 'spiral'"):
        toy_points("spiral", 4, _gen(0))
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        toy_split("rings", "valid")


def test_checkerboard_support_is_the_eight_even_cells(request):
    x = toy_points("checkerboard", 200_000, _gen(_seed(request)))
    assert (x >= -4).all() and (x < 4).all()
    cell = torch.floor(x / 2).long()  # 2x2 cells, indices -2 .. 1
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all()
    assert len({tuple(c) for c in cell.unique(dim=0).tolist()}) == 8


def test_checkerboard_density_is_one_over_32(request):
    """Every unit square of the support holds 1/32 of the mass (density 1/32 = exp(-ln 32))."""
    n = 320_000
    x = toy_points("checkerboard", n, _gen(_seed(request)))
    unit = torch.floor(x).long() + 4  # 0 .. 7
    counts = torch.bincount(unit[:, 0] * 8 + unit[:, 1], minlength=64).view(8, 8).double()
    occupied = counts > 0
    assert int(occupied.sum()) == 32
    density = counts[occupied] / n  # per unit area
    sigma = math.sqrt((1 / 32) * (31 / 32) / n)
    assert (density - 1 / 32).abs().max() < 5 * sigma
    assert math.isclose(math.log(1 / 32), CHECKERBOARD_LOG_DENSITY)


def test_other_sets_match_their_geometry(request):
    g = _gen(_seed(request))
    r = toy_points("rings", 40_000, g).norm(dim=1)
    near = (r[:, None] - torch.tensor([0.75, 1.5, 2.25, 3.0])).abs().min(1).values
    assert (near < 0.5).all() and near.mean() < 0.12
    e = toy_points("eight_gaussians", 40_000, g) * 1.414
    k = torch.arange(8) * math.pi / 4
    centres = 4 * torch.stack([torch.cos(k), torch.sin(k)], 1)
    d = torch.cdist(e, centres).min(1).values
    assert abs(float(d.pow(2).mean().sqrt()) / math.sqrt(2) - 0.5) < 0.02  # noise std 0.5 per axis
    m = (toy_points("two_moons", 40_000, g) - torch.tensor([-1.0, -0.2])) / 2  # back to make_moons' frame
    assert abs(float(m[:, 0].mean()) - 0.5) < 0.03 and abs(float(m[:, 1].mean()) - 0.25) < 0.03


def test_training_decreases_loss_and_seeds_are_independent(table, request):
    s = _seed(request) % 10_000
    res = table.train_stack(ROOT / "specs" / "toy-glow3.flow", [s, s + 1], 40, log_every=10, profile=1)
    first, last = res.losses[0], res.losses[-1]
    assert all(b < a for a, b in zip(first, last)), res.losses
    rows = res.stack.flat.detach()
    assert not torch.allclose(rows[0], rows[1])
    models = res.stack.unstack()
    assert not torch.equal(models[0].steps[2].net.net[0].weight, models[1].steps[2].net.net[0].weight)
    assert set(res.ms) == {"data", "step", "optimizer"} and set(res.phases_ms) == {"forward", "backward", "optimizer"}


def test_vmapped_step_equals_unbatched_step(table, request):
    """One vmapped grad-and-Adam step of the stacked seeds equals the same step of seed 0's own
    model under ordinary autograd (to 1e-6)."""
    s = _seed(request) % 10_000
    stack, gens = table.build_stack(ROOT / "specs" / "toy-glow3.flow", [s, s + 1])
    alone = copy.deepcopy(stack.models[0])
    x = torch.stack([toy_points("checkerboard", 64, g) for g in gens])
    assert torch.allclose(stack.log_prob(x)[0], alone.log_prob(x[0]), atol=1e-6, rtol=0)
    flat = stack.flat.detach().clone()
    grads, loss = table.seed_step(stack)(flat, stack.buffers, x)
    flat.grad = grads
    torch.optim.Adam([flat], lr=1e-3, fused=True).step()
    own = -alone.log_prob(x[0]).mean()
    own.backward()
    assert abs(float(loss[0] - own.detach())) < 1e-6
    assert torch.allclose(grads[0], torch.cat([p.grad.reshape(-1) for p in alone.parameters()]), atol=1e-6, rtol=0)
    torch.optim.Adam(alone.parameters(), lr=1e-3).step()
    after = torch.cat([p.detach().reshape(-1) for p in alone.parameters()])
    assert torch.allclose(flat.detach()[0], after, atol=1e-6, rtol=0)
    assert not torch.allclose(flat.detach()[1], after)


def test_table_script_runs_end_to_end_and_scores_vflow_by_importance_sampling(table, tmp_path, capsys, monkeypatch):
    """The whole script at tiny settings (both kinds of model, eager): it trains, evaluates (the
    augmented model by importance sampling with --samples, the Glow exactly: one sample), writes
    its JSON and prints the table."""
    used: dict[str, set[int]] = {}
    real = table.FlowModel.log_likelihood

    def spy(self, x, y=None, samples=1, chunk=None):
        used.setdefault(self.name, set()).add(samples)
        return real(self, x, y, samples=samples, chunk=chunk)

    monkeypatch.setattr(table.FlowModel, "log_likelihood", spy)
    out = tmp_path / "t.json"
    assert table.main(["--iterations", "3", "--seeds", "2", "--test-points", "20", "--samples", "4", "--no-compile",
                       "--models", "toy-glow3", "toy-vflow3-10d", "--json", str(out)]) == 0
    assert used == {"toy-glow3": {1}, "toy-vflow3-10d": {4}}
    rows = {r["model"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"toy-glow3", "toy-vflow3-10d"}
    assert all(len(r["test_ll"]) == 2 and all(math.isfinite(v) for v in r["test_ll"]) for r in rows.values())
    assert "VFlow Sec. 5 checkerboard" in capsys.readouterr().out
