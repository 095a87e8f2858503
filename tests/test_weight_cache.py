"""The 1x1 convolution's cached W^-1 / log|det W|: reused while the weights stand still, never stale.

Each case changes the weights the way a user or a training loop does (optimizer steps, load_state_dict,
.to(dtype), a ``.data`` write, an EMA-style copy) and checks that the next no-grad call gives the
inverse and log-det of the weights as they are now, and that under autograd the parameters get
their gradients.
"""
from __future__ import annotations

import pytest
import torch

from augflow_dsl.layers.linear import Conv1x1

PARAMS = ["full", "lu"]


def _layer(param: str, split: str = "none") -> Conv1x1:
    torch.manual_seed(0)
    layer = Conv1x1((4, 3, 3), param=param, split=split)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return layer


def _fresh(layer: Conv1x1, inverse: bool):
    """W (or W^-1) and the log-det computed from the current weights, bypassing the cache."""
    out = []
    for m in layer.mats:
        w, ld = m._weight_and_logdet()
        w_inv, ld_inv = m._inverse_weight_and_logdet()
        assert torch.allclose(w_inv @ w, torch.eye(len(w), dtype=w.dtype), atol=1e-5)  # LU: triangular solves
        assert torch.allclose(ld_inv, -ld)
        out.append((w_inv, ld_inv) if inverse else (w, ld))
    return out


def _assert_current(layer: Conv1x1) -> None:
    with torch.no_grad():
        for m, (w_inv, ld_inv), (w, ld) in zip(layer.mats, _fresh(layer, True), _fresh(layer, False)):
            got_inv, got_ld_inv = m.inverse_weight_and_logdet()
            got_w, got_ld = m.weight_and_logdet()
            assert torch.equal(got_inv, w_inv) and torch.equal(got_ld_inv, ld_inv)
            assert torch.equal(got_w, w) and torch.equal(got_ld, ld)


@pytest.mark.parametrize("param", PARAMS)
def test_reused_while_weights_stand_still(param):
    layer = _layer(param, "channels")
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        y1, _ = layer.inverse_and_logdet(x)
        first = [m.cache.entries["inverse"][2][0] for m in layer.mats]
        y2, _ = layer.inverse_and_logdet(x)
        assert all(m.cache.entries["inverse"][2][0] is t for m, t in zip(layer.mats, first))
    assert torch.equal(y1, y2)
    _assert_current(layer)
    with torch.no_grad():
        x2, _ = layer.inverse_and_logdet(layer(x)[0])
    assert torch.allclose(x2, x, atol=1e-5)


@pytest.mark.parametrize("param", PARAMS)
def test_training_steps_recompute(param):
    """An optimizer step changes the weights every iteration: each no-grad inverse after it is the
    inverse of the new weights, and the training forward's gradients reach every parameter."""
    layer = _layer(param)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    x = torch.randn(3, 4, 3, 3)
    for _ in range(3):
        with torch.no_grad():
            layer.inverse_and_logdet(x)  # fill the cache with the current weights
        y, ld = layer(x)
        loss = (y ** 2).sum() - ld.sum()
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
        opt.step()
        _assert_current(layer)


@pytest.mark.parametrize("param", PARAMS)
def test_gradients_are_those_of_the_current_weights(param):
    """A cache filled under no_grad is not used under autograd: the inverse's gradients equal those
    of a layer that never cached."""
    layer, twin = _layer(param), _layer(param)
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        layer(x), layer.inverse_and_logdet(x)
    for m in (layer, twin):
        y, ld = m.inverse_and_logdet(x)
        ((y ** 2).sum() + ld.sum()).backward()
    for p, q in zip(layer.parameters(), twin.parameters()):
        assert torch.equal(p.grad, q.grad)


@pytest.mark.parametrize("param", PARAMS)
def test_load_state_dict_to_and_data_writes_recompute(param):
    layer, other = _layer(param), _layer(param)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.5)
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        layer.inverse_and_logdet(x)
    layer.load_state_dict(other.state_dict())
    _assert_current(layer)
    layer.double()
    with torch.no_grad():
        y, _ = layer.inverse_and_logdet(x.double())
    assert y.dtype == torch.float64
    _assert_current(layer)
    for p in layer.parameters():
        p.data.mul_(0.9)  # bypasses the version counter: caught by the content check
    _assert_current(layer)
    ema = {k: v.clone() for k, v in layer.state_dict().items()}
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.01)
    _assert_current(layer)
    layer.load_state_dict(ema)  # EMA-style swap back
    _assert_current(layer)
    assert "cache" not in "".join(layer.state_dict())


def test_frozen_weights_and_inference_mode():
    """Frozen parameters: cached values serve a forward whose input needs a gradient; an entry
    made in inference mode is not handed to ordinary autograd code."""
    layer = _layer("full")
    layer.requires_grad_(False)
    with torch.inference_mode():
        layer.inverse_and_logdet(torch.randn(2, 4, 3, 3))
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    y, _ = layer.inverse_and_logdet(x)
    y.sum().backward()
    w_inv = torch.linalg.inv(layer.mats[0].weight)  # "full": the general inverse
    assert torch.allclose(x.grad, w_inv.sum(0).view(1, 4, 1, 1).expand_as(x), atol=1e-6)
