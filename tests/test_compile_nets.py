"""Regional compilation (``FlowModel.compile_nets``, what ``bench --compile`` and ``train --compile``
use) over every conditioner net op of the registry: one conformance case per net op, float32,
weights moved off their zero initialisation; the compiled nets give the eager layer's output,
log-det and parameter gradients, with no graph break. (Flow++'s ``conv_attention`` once failed
here: its concat-ELU wrote into views of its output, which AOT autograd cannot replay.)"""
from __future__ import annotations

import pytest
import torch
from test_conformance import CASES, COND, _build, _perturb, _x
from torch._dynamo.utils import counters

from augflow_dsl.layers import has_layer
from augflow_dsl.layers.base import NetModule
from augflow_dsl.ops.registry import NET, REGISTRY, OpEnv, get


def _net_cases() -> dict[str, tuple]:
    """The first conformance case whose op owns each net op (by the op's own ``nets``)."""
    out: dict[str, tuple] = {}
    for case in CASES:
        name, args, shape, ctx, _ = case
        op = get(name)
        if "q" in op.Args.model_fields:
            continue
        for call, _io in op.nets(op.Args(**args), shape, OpEnv(context=ctx, condition=COND,
                                                                  condition_in=COND)).values():
            out.setdefault(call.op, case)
    return out


NET_CASES = _net_cases()


def test_every_net_op_has_a_case():
    nets = {n for n, op in REGISTRY.items() if op.role == NET and has_layer(n)}
    assert nets <= set(NET_CASES), sorted(nets - set(NET_CASES))


@pytest.mark.parametrize("net", sorted(NET_CASES))
def test_compiled_nets_match_eager(net):
    name, args, shape, ctx, domain = NET_CASES[net]
    torch.manual_seed(0)
    layer, _ = _build(name, args, shape, ctx)
    x, cond = _x(shape, domain, 4), (torch.randn(4, *ctx) if ctx is not None else None)
    layer.train()
    layer(x, cond)  # data-dependent inits
    _perturb(layer)
    layer.eval()

    def run():
        layer.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same noise for a step that draws (cross_unit's e)
        y, ld = layer(x, cond)
        (y.square().sum() + ld.sum()).backward()
        return y.detach(), ld.detach(), [p.grad.clone() for p in layer.parameters()]

    y0, ld0, g0 = run()
    nets = [m for m in layer.modules() if isinstance(m, NetModule)]
    assert nets
    counters.clear()
    for m in nets:
        m.compile(dynamic=False)
    y1, ld1, g1 = run()
    assert counters["stats"]["unique_graphs"] >= 1, "nothing was compiled"
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert torch.allclose(y0, y1, rtol=1e-4, atol=1e-5)
    assert torch.allclose(ld0, ld1, rtol=1e-4, atol=1e-4)
    for a, b in zip(g0, g1):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4)


def test_compile_nets_raises_the_recompile_limits():
    """Flow++'s 9 + 4 conv-attention nets share one forward function, so one cache: at torch's
    default 8 entries the later shapes would silently run eagerly. Building the wrappers
    compiles nothing yet, so this costs no compilation."""
    import augflow_dsl as af
    cfg = torch.compiler.config
    saved = cfg.recompile_limit, cfg.accumulated_recompile_limit
    try:
        cfg.recompile_limit, cfg.accumulated_recompile_limit = 8, 256
        m = af.compile(af.load("specs/flowpp.flow", {"size": 8, "filters": 4, "blocks": 1, "dq_filters": 4,
                                                     "dq_blocks": 1}))
        nets = [n for n in m.modules() if isinstance(n, NetModule)]
        assert len(nets) == 13
        m.compile_nets()
        assert cfg.recompile_limit >= 3 * 13 and cfg.accumulated_recompile_limit >= 256
    finally:
        cfg.recompile_limit, cfg.accumulated_recompile_limit = saved
