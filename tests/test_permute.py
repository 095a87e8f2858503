"""reverse and shuffle (ops/permute.py, layers/permute.py): the layer's permutation is the one the op
declares to the coverage audit (``moves``), shuffle's is fixed by its seed and saved with the model,
and the coverage audit counts them as mixings: a channel coupling alternated by either proves
``coverage``, repeated alone it does not."""
from __future__ import annotations

import pytest
import torch

import augflow_dsl as af
from augflow_dsl.compiler.plan import layer_for
from augflow_dsl.ops.registry import OpCall, get


def call(name: str, **args) -> OpCall:
    return OpCall(name, get(name).Args(**args))


@pytest.mark.parametrize("name, args, shape", [("reverse", {}, (3, 2, 2)), ("reverse", {}, (5,)),
                                               ("shuffle", {"seed": 4}, (6, 2, 3)), ("shuffle", {"seed": 9}, (7,))])
def test_the_layer_moves_elements_as_the_op_declares(name, args, shape):
    c = call(name, **args)
    layer = layer_for(c, shape)
    x = torch.arange(float(torch.Size(shape).numel())).view(1, *shape)
    y, ld = layer(x)
    assert y.flatten().long().tolist() == get(name).moves(c.args, shape) and ld.tolist() == [0.0]
    assert torch.equal(layer.inverse(y), x)


def test_shuffle_is_fixed_by_its_seed_and_saved():
    a, b, other = (layer_for(call("shuffle", seed=s), (8,)) for s in (1, 1, 2))
    assert torch.equal(a.perm, b.perm) and not torch.equal(a.perm, other.perm)
    assert sorted(a.perm.tolist()) == list(range(8)) and "perm" in a.state_dict()


SPEC = """flow: x
data: {{shape: [4]}}
module step: [actnorm, affine_coupling(net: mlp(hidden: 8), layout: halves){mix}]
stages: [3 * step]
prior: normal
"""


@pytest.mark.parametrize("mix, covered", [(", reverse", True), (", shuffle(seed: 3)", True), ("", False)])
def test_the_coverage_audit_sees_a_mixing(mix, covered):
    report = af.check(af.loads(SPEC.format(mix=mix)))
    assert report.valid
    assert ("coverage" in [p.id for p in report.proved]) == covered, report.warnings
