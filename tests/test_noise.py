"""Training's per-example noise (runtime.noise): every draw of a pass is a function of (seed, step,
purpose, draw number, global example index), so K processes holding slices of the global batch see
exactly the noise one process sees for the whole batch -- for the dequantizer, the augment points, the
q-network bases and dropout alike; the training pass leaves the global generators alone."""
from __future__ import annotations

import pytest
import torch

from conftest import SPECS_DIR

from augflow_dsl.compiler.model import compile_spec
from augflow_dsl.layers.base import draw
from augflow_dsl.layers.modules import Dropout
from augflow_dsl.runtime.noise import PerExampleNoise, example_noise


def _pass(model, x, seed, step, rank, world, batch):
    log = []
    with example_noise(seed, step, rank, world, batch) as feed:
        out = model(x)
        log = list(feed.log)
    return out, feed.used, log


@pytest.mark.parametrize("world", [2, 4])
def test_slices_of_k_ranks_are_the_one_process_pass(world):
    """digits-small (variational dequantization, a learned-normal q base, cross-unit noise): the
    per-example log-densities of K ranks' slices, put together, equal one process's pass."""
    torch.manual_seed(0)
    model = compile_spec(str(SPECS_DIR / "digits-small.flow"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # nets off their zero init: the noise shapes the output
    model.train()
    x = torch.randint(0, 17, (8, 1, 8, 8)).float()
    with torch.no_grad():
        whole, used, _ = _pass(model, x, 3, 11, 0, 1, 8)
        share = 8 // world
        parts = [_pass(model, x[r * share:(r + 1) * share], 3, 11, r, world, 8)[0] for r in range(world)]
        other_step = _pass(model, x, 3, 12, 0, 1, 8)[0]
    assert used >= 3  # u of the dequantizer's base, the cross-unit draws: the pass does draw
    torch.testing.assert_close(torch.cat(parts), whole, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(other_step, whole)  # another step, other noise


def test_the_training_pass_leaves_the_global_generator_alone():
    model = compile_spec(str(SPECS_DIR / "digits-small.flow"))
    model.train()
    x = torch.randint(0, 17, (4, 1, 8, 8)).float()
    model.initialize(x)
    state = torch.get_rng_state()
    with torch.no_grad():
        _pass(model, x, 0, 0, 0, 1, 4)
    assert torch.equal(torch.get_rng_state(), state)


def test_dropout_masks_are_per_example():
    drop = Dropout(0.5).train()
    x = torch.randn(6, 3, 4, 4) + 3.0
    with example_noise(1, 5, 0, 1, 6):
        whole = drop(x)
    halves = []
    for r in range(3):
        with example_noise(1, 5, r, 3, 6):
            halves.append(drop(x[2 * r:2 * r + 2]))
    assert torch.equal(torch.cat(halves), whole)
    kept = (whole != 0).float().mean()
    assert 0.35 < float(kept) < 0.65 and torch.allclose(whole[whole != 0], 2 * x[whole != 0])


def test_laws_dtype_device_and_the_first_api_form():
    owner = torch.nn.Module()
    like = torch.zeros(4096, 8, dtype=torch.float64)
    with example_noise(0, 0, 0, 1, 4096):
        u = draw(owner, "rand", like.shape, like)
        e = draw(owner, "randn", like.shape, like)
        legacy = draw(owner, "randn", lambda: torch.randn(4096, 8))  # an extension's lambda: same law
    assert u.dtype == e.dtype == torch.float64 and legacy.dtype == torch.float32
    assert 0.0 <= float(u.min()) and float(u.max()) < 1.0 and abs(float(u.mean()) - 0.5) < 0.01
    for t in (e, legacy):
        assert abs(float(t.mean())) < 0.02 and abs(float(t.std()) - 1.0) < 0.02
    with example_noise(0, 0, 1, 2, 8):  # rank 1's rows of the legacy draw: rows 4..7 of the whole
        mine = draw(owner, "randn", lambda: torch.randn(4, 3))
    with example_noise(0, 0, 0, 1, 8):
        whole = draw(owner, "randn", lambda: torch.randn(8, 3))
    assert torch.equal(mine, whole[4:])


def test_a_draw_that_is_not_per_example_is_refused():
    owner = torch.nn.Module()
    with pytest.raises(RuntimeError, match="first axis must be the batch"):
        with example_noise(0, 0, 0, 2, 8):
            draw(owner, "randn", (3, 2), torch.zeros(1))
    with pytest.raises(ValueError, match="not inside a global batch"):
        PerExampleNoise(0, 0, 6, 4, 8)
