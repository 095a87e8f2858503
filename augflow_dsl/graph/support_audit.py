"""Support propagation: the set every tensor of the graph lies in, checked against each op's domain.

Forward (the direction every chain runs when scoring: the model from x to its priors, each
q-network from its base noise to its sample), in execution order:

* the input is ``Integers(bits)`` for data with ``bits``, R otherwise; a base prior gives R;
* a dequantizer reads integer data of ``bits`` and returns ``(x + u) / 2^bits`` for u its noise
  (uniform: [0, 1); variational: what its q's last step returns), and needs u in [0, 1)^D;
* a bijection or drop reads its op's ``domain`` and returns its ``image`` of its input set;
* an augment point returns the join of its input and what it appends;
* a q's context net reads the data its q is conditioned on (x for the dequantizer's r, the
  dequantized x~ for an input augmentation's q) and must find it in its ``domain``.

Backward (the sampling direction, model chain only): from the prior's support (R), each op's
inverse must find its input in ``inverse_domain``; it returns ``inverse_image``.

Each node gets ``support_in`` / ``support_out`` attributes (a :mod:`~augflow_dsl.ops.supports` set).
"""
from __future__ import annotations

import networkx as nx

from ..ops.registry import AUGMENT, BIJECTION, CONTEXT, DEQUANTIZER, DROP, PRIOR
from ..ops.supports import REAL, Integers, Support, dequantized, join, subset
from .builder import INPUT
from .findings import Finding



def _pred(g: nx.DiGraph, n: str, kinds: tuple[str, ...]) -> list[str]:
    return [u for u, _, e in g.in_edges(n, data=True) if e["kind"] in kinds]


def _where(g: nx.DiGraph, src: str) -> str:
    d = g.nodes[src]
    if d["role"] == INPUT:
        return "the integer data x" if g.graph.get("bits") else "the data x"
    return d["label"]


def forward(g: nx.DiGraph) -> list[Finding]:
    """Annotate every data-path and context node with its supports; findings for 'domains'
    and 'dequantizer-noise'."""
    bits = g.graph.get("bits")
    out: dict[str, Support] = {}
    found: list[Finding] = []
    for n in nx.lexicographical_topological_sort(g, key=lambda v: g.nodes[v]["order"]):
        d = g.nodes[n]
        role = d["role"]
        call = d.get("call")
        if role == INPUT:
            out[n] = Integers(bits) if bits else REAL
        elif role == PRIOR and not _pred(g, n, ("data",)):
            out[n] = REAL  # a q's base noise: a Gaussian on R
        elif role in (BIJECTION, DROP, DEQUANTIZER, AUGMENT, PRIOR, CONTEXT):
            srcs = _pred(g, n, ("condition",) if role == CONTEXT else ("data",))
            if len(srcs) != 1 or srcs[0] not in out:
                continue  # a broken graph: the data-path property reports it
            s_in = out[srcs[0]]
            d["support_in"] = s_in
            if role == PRIOR:
                continue  # a density on R scores whatever reaches it (a bounded set: a valid, deficient bound)
            op = call.definition
            dom = op.domain(call.args, bits)
            if not subset(s_in, dom):
                found.append(Finding("domains", d["label"], (
                    f"its input lies in {s_in} ({_where(g, srcs[0])}), but {call.op} reads only {dom}; "
                    f"to fix: {op.domain_fix(call.args)}")))
            if role == CONTEXT:
                continue
            if role == DEQUANTIZER:
                q = _pred(g, n, ("sample",))
                noise = out.get(q[0], REAL) if q else op.noise()
                need = op.noise_domain()
                if not subset(noise, need):
                    last = g.nodes[q[0]]["label"] if q else call.op
                    qname = g.nodes[q[0]]["chain"][2:] if q else "?"
                    found.append(Finding("dequantizer-noise", d["label"], (
                        f"q '{qname}' hands it noise u in {noise} (its last step is '{last}'), but u must lie in "
                        f"{need}^D so that (x + u) / 2^bits stays in the bin of x; otherwise the bound integrates "
                        f"p outside the bin and its likelihoods mean nothing; to fix: end q {qname}'s flow with "
                        f"`sigmoid`")))
                    noise = need  # reported once: carry on as if it held, so later ops are not blamed for it
                out[n] = dequantized(noise, bits) if bits else REAL
            elif role == AUGMENT:
                q = _pred(g, n, ("sample",))
                added = out.get(q[0], REAL) if q else REAL
                out[n] = op.joined(call.args, s_in, added)
            else:
                out[n] = op.image(call.args, s_in)
            d["support_out"] = out[n]
    for n, s in out.items():
        g.nodes[n].setdefault("support_out", s)
    return found


def backward(g: nx.DiGraph, chain: list[str]) -> list[Finding]:
    """The sampling direction of the model ``chain`` (its data nodes in execution order): from
    the prior's samples (R) back to the dequantizer; findings for 'inverse-domains'."""
    found: list[Finding] = []
    s: Support = REAL
    for n in reversed(chain):
        d = g.nodes[n]
        role = d["role"]
        if role in (INPUT, DEQUANTIZER):
            break  # the dequantizer's inverse floors and clamps: it takes any value
        if role == PRIOR:
            if n == "p/prior":
                s = REAL
            continue
        call = d["call"]
        op = call.definition
        if role == DROP:
            s = join(s, REAL)  # the inverse puts the dropped part back, drawn from its prior
        need = op.inverse_domain(call.args)
        d["support_sampled"] = s
        if not subset(s, need):
            found.append(Finding("inverse-domains", d["label"], (
                f"when sampling, its inverse reads {s} (the prior's samples pulled back through the steps after "
                f"it), but the inverse of {call.op} reads only {need}; to fix: {op.inverse_fix(call.args)}")))
        s = op.inverse_image(call.args, s)
    return found


__all__ = ["forward", "backward"]
