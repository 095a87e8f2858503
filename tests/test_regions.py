"""The regions and supports ops declare (pure Python, read by the audit) agree with their torch
layers: a coupling leaves its declared ``unchanged`` region unchanged and its net reads nothing
outside ``reads``; each elementwise op maps points of its domain into its declared image, and
its inverse into its declared inverse image. Parameters are moved off their zero init, so a net
that read more would show it."""
from __future__ import annotations

import pytest
import torch

from augflow_dsl.compiler.model import layer_for
from augflow_dsl.ops import supports as S
from augflow_dsl.ops.registry import BIJECTION, OpCall, OpEnv, get, names
from augflow_dsl.ops.regions import Region

COUPLINGS = [n for n in names(BIJECTION) if "net" in get(n).Args.model_fields]


def mask(region: Region, shape) -> torch.Tensor:
    """1 on the elements of ``region`` of a tensor of ``shape`` (batch dim excluded)."""
    m = torch.zeros(shape, dtype=torch.bool)
    lo, hi = region.channels
    if len(shape) == 1:
        m[lo:hi] = True
        return m
    _, h, w = shape
    i = torch.arange(h).view(-1, 1)
    j = torch.arange(w).view(1, -1)
    pos = {"all": torch.ones(h, w, dtype=torch.bool), "even_columns": (j % 2 == 0).expand(h, w),
           "odd_columns": (j % 2 == 1).expand(h, w), "checker_even": (i + j) % 2 == 0,
           "checker_odd": (i + j) % 2 == 1}[region.positions]
    m[lo:hi] = pos
    return m


def _cases():
    for name in COUPLINGS:
        for split in get(name).Args.model_fields["split"].annotation.__args__:
            if name == "mixture_coupling" and split == "checkerboard":
                continue  # refused by its shape rule
            for shape in ((4, 4, 4), (3, 4, 4)) + (((5,), (4,)) if split == "channels" else ()):
                if name == "mixture_coupling" and shape[0] % 2 and split == "channels":
                    continue
                yield pytest.param(name, split, shape, id=f"{name}-{split}-{'x'.join(map(str, shape))}")


@pytest.mark.parametrize("name,split,shape", list(_cases()))
def test_a_coupling_keeps_what_it_declares_and_its_net_reads_only_that(name, split, shape):
    torch.manual_seed(0)
    net = OpCall("glow_net", get("glow_net").Args(filters=4)) if len(shape) == 3 else \
        OpCall("mlp", get("mlp").Args(hidden=4))
    args = {"net": net, "split": split} | ({"components": 2} if name == "mixture_coupling" else {})
    call = OpCall(name, get(name).Args(**args))
    op = call.definition
    layer = layer_for(call, shape, OpEnv()).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.3)
    keep, reads = op.unchanged(call.args, shape), op.reads(call.args, shape)
    assert reads.within(keep)
    keep_m, reads_m = mask(keep, shape), mask(reads, shape)
    assert 0 < keep_m.sum() < keep_m.numel()
    x = torch.randn(2, *shape, dtype=torch.float64)
    y, _ = layer(x)
    assert torch.equal(y[:, keep_m], x[:, keep_m])  # unchanged, bit for bit
    outside = ~reads_m
    x2 = x + outside * torch.randn_like(x)
    y2, _ = layer(x2)
    moved = (y2 - y).abs() > 0
    assert moved[:, outside].any()
    assert not moved[:, ~outside].any()  # nothing the net sees changed, so no other element moved
    # and reading more would show: perturb one element the net reads
    x3 = x.clone()
    x3.view(2, -1)[:, reads_m.view(-1).nonzero()[0]] += 1.0
    y3, _ = layer(x3)
    assert ((y3 - y).abs() > 0)[:, outside].any()


POINTS = {"R": torch.tensor([-30.0, -3.0, -0.5, 0.0, 0.7, 4.0, 30.0], dtype=torch.float64),
          "(0, 1)": torch.tensor([1e-9, 0.01, 0.5, 0.99, 1 - 1e-9], dtype=torch.float64),
          "[0, 1)": torch.tensor([0.0, 0.01, 0.5, 0.999], dtype=torch.float64)}
SETS = {"R": S.REAL, "(0, 1)": S.UNIT, "[0, 1)": S.UNIT_HALF_OPEN}


def _inside(s: S.Interval, t: torch.Tensor) -> bool:
    lo = t >= s.lo if s.lo_closed else t > s.lo
    hi = t <= s.hi if s.hi_closed else t < s.hi
    return bool((lo & hi).all())


@pytest.mark.parametrize("name,args", [("sigmoid", {}), ("logit", {"alpha": 0.05}), ("logit", {"alpha": 0.0}),
                                       ("shift", {"by": -0.5}), ("squeeze", {}), ("swap", {})])
@pytest.mark.parametrize("where", list(POINTS))
def test_elementwise_images_hold_on_points(name, args, where):
    call = OpCall(name, get(name).Args(**args))
    op = call.definition
    s = SETS[where]
    if not S.subset(s, op.domain(call.args, None)):
        return  # outside its domain: the audit refuses this input
    n = POINTS[where]
    x = n.repeat(4 * 2 * 2 // n.numel() + 1)[:16].view(1, 4, 2, 2)
    layer = layer_for(call, (4, 2, 2)).double()
    y, _ = layer(x)
    assert torch.isfinite(y).all() and _inside(S.as_interval(op.image(call.args, s)), y)
    if S.subset(s, op.inverse_domain(call.args)):
        xi, _ = layer.inverse(x)
        assert torch.isfinite(xi).all() and _inside(S.as_interval(op.inverse_image(call.args, s)), xi)
