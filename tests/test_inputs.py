"""The model's boundary refuses what it cannot read with a ValueError that says what was
expected, instead of returning a number: integer data outside 0 .. 2^bits - 1, fractions
(torchvision ToTensor's [0, 1] floats get a hint), the wrong shape, something that is not a
tensor; counts (samples, chunk, n) below one. A numpy array is converted."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import augflow_dsl as af

SPEC = """
flow: boundary
data: {shape: [2, 4, 4], bits: 3}
module step: [actnorm, conv1x1, affine_coupling(net: glow_net(filters: 4))]
stages: [2 * step]
"""

VECTOR = """
flow: boundary-vector
data: {shape: [2]}
module step: [actnorm, affine_coupling(net: mlp(hidden: 4)), swap]
stages: [2 * step]
"""


@pytest.fixture(scope="module")
def model():
    m = af.compile(af.loads(SPEC))
    m.eval()
    return m


def _ints(n=3):
    return torch.randint(0, 8, (n, 2, 4, 4))


@pytest.mark.parametrize("x, words", [
    (lambda: _ints().float() + 8, ["0 .. 7", "3 bits", "8 to"]),
    (lambda: _ints().float() - 8, ["0 .. 7", "-8"]),
    (lambda: _ints().float() / 7, ["fractional", "ToTensor"]),
    (lambda: _ints().float() + 0.5, ["fractional"]),
    (lambda: torch.full((2, 2, 4, 4), float("nan")), ["non-finite"]),
    (lambda: _ints().to(torch.int64) + 100, ["0 .. 7", "100"]),
    (lambda: _ints()[:, :1], ["[N, 2x4x4]", "[3, 1, 4, 4]"]),
    (lambda: _ints()[:0], ["N >= 1"]),
    (lambda: _ints().tolist(), ["torch.Tensor", "list"]),
    (lambda: _ints() > 3, ["real numbers"]),
])
def test_log_prob_refuses(model, x, words):
    with pytest.raises(ValueError) as err:
        model.log_prob(x())
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_every_entry_point_checks(model):
    bad = _ints().float() / 7
    for fn in (model.log_prob, model.encode, model.bits_per_dim, lambda t: model.log_likelihood(t, samples=2)):
        with pytest.raises(ValueError, match="fractional"):
            fn(bad)


def test_numpy_is_converted_and_integer_dtypes_accepted(model, seed):
    x = _ints()
    torch.manual_seed(seed)
    ref = model.log_prob(x.float())
    torch.manual_seed(seed)
    assert torch.allclose(model.log_prob(x.numpy().astype(np.uint8)), ref), f"seed {seed}"
    torch.manual_seed(seed)
    assert torch.allclose(model.log_prob(x.to(torch.uint8)), ref), f"seed {seed}"


@pytest.mark.parametrize("kwargs, what", [({"samples": 0}, "samples"), ({"samples": 2, "chunk": 0}, "chunk"),
                                          ({"samples": 1.5}, "samples"), ({"samples": -3}, "samples")])
def test_counts_at_least_one(model, kwargs, what):
    with pytest.raises(ValueError, match=what):
        model.log_likelihood(_ints(), **kwargs)
    with pytest.raises(ValueError, match=what):
        model.bits_per_dim(_ints(), **kwargs)


@pytest.mark.parametrize("n", [0, -1, 2.0])
def test_sample_count(model, n):
    with pytest.raises(ValueError, match="n >= 1"):
        model.sample(n)


def test_continuous_data_takes_any_real_values(seed):
    m = af.compile(af.loads(VECTOR))
    lp = m.log_prob(torch.tensor([[-3.5, 0.25], [1e3, 7.0]]))
    assert lp.shape == (2,) and torch.isfinite(lp).all(), f"seed {seed}"
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        m.log_prob(torch.zeros(3, 3))
