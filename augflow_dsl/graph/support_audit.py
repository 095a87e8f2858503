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

The sets found are a separate result (:class:`Supports`, by node id): the graph's records are
frozen and the audit writes nothing onto the graph.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from ..ops.registry import AUGMENT, BIJECTION, CONTEXT, DEQUANTIZER, DROP, PRIOR
from ..ops.supports import REAL, Integers, Support, dequantized, join, subset
from . import schema as S
from .findings import Finding
from .schema import DATA, FINAL, INPUT, SAMPLE


@dataclass
class Supports:
    """What the propagation found, by node id (a :mod:`~augflow_dsl.ops.supports` set each):
    ``inputs`` / ``outputs``: the set a data-path or context node reads / returns, scoring;
    ``sampled``: the set a step's inverse reads, sampling (model chain only)."""

    inputs: dict[str, Support] = field(default_factory=dict)
    outputs: dict[str, Support] = field(default_factory=dict)
    sampled: dict[str, Support] = field(default_factory=dict)


def _pred(g: nx.DiGraph, n: str, *kinds: str) -> list[str]:
    return [u for u, _ in S.in_edges(g, n, *kinds)]


def _where(g: nx.DiGraph, src: str) -> str:
    d = S.node(g, src)
    if d.role == INPUT:
        return "the integer data x" if S.graph_info(g).bits else "the data x"
    return d.label


def forward(g: nx.DiGraph, supports: Supports | None = None) -> list[Finding]:
    """Propagate every data-path and context node's supports into ``supports`` (when given);
    findings for 'domains' and 'dequantizer-noise'."""
    sup = supports if supports is not None else Supports()
    bits = S.graph_info(g).bits
    out = sup.outputs
    found: list[Finding] = []
    for n in nx.lexicographical_topological_sort(g, key=lambda v: S.node(g, v).order):
        d = S.node(g, n)
        role = d.role
        call = d.call
        if role == INPUT:
            out[n] = Integers(bits) if bits else REAL
        elif role == PRIOR and not _pred(g, n, DATA):
            out[n] = REAL  # a q's base noise: a Gaussian on R
        elif role in (BIJECTION, DROP, DEQUANTIZER, AUGMENT, PRIOR, CONTEXT):
            srcs = _pred(g, n, S.CONDITION if role == CONTEXT else DATA)
            if len(srcs) != 1 or srcs[0] not in out:
                continue  # a broken graph: the data-path property reports it
            s_in = out[srcs[0]]
            sup.inputs[n] = s_in
            if role == PRIOR:
                continue  # a density on R scores whatever reaches it (a bounded set: a valid, deficient bound)
            op = call.definition
            dom = op.domain(call.args, bits)
            if not subset(s_in, dom):
                found.append(Finding("domains", d.label, (
                    f"its input lies in {s_in} ({_where(g, srcs[0])}), but {call.op} reads only {dom}; "
                    f"to fix: {op.domain_fix(call.args)}")))
            if role == CONTEXT:
                continue
            if role == DEQUANTIZER:
                q = _pred(g, n, SAMPLE)
                noise = out.get(q[0], REAL) if q else op.noise()
                need = op.noise_domain()
                if not subset(noise, need):
                    last = S.node(g, q[0]).label if q else call.op
                    chain = S.node(g, q[0]).chain if q else ""
                    qname = S.q_name(chain) if S.is_q_chain(chain) else "?"
                    found.append(Finding("dequantizer-noise", d.label, (
                        f"q '{qname}' hands it noise u in {noise} (its last step is '{last}'), but u must lie in "
                        f"{need}^D so that (x + u) / 2^bits stays in the bin of x; otherwise the bound integrates "
                        f"p outside the bin and its likelihoods mean nothing; to fix: end q {qname}'s flow with "
                        f"`sigmoid`")))
                    noise = need  # reported once: carry on as if it held, so later ops are not blamed for it
                out[n] = dequantized(noise, bits) if bits else REAL
            elif role == AUGMENT:
                q = _pred(g, n, SAMPLE)
                added = out.get(q[0], REAL) if q else REAL
                out[n] = op.joined(call.args, s_in, added)
            else:
                out[n] = op.image(call.args, s_in)
    return found


def backward(g: nx.DiGraph, chain: list[str], supports: Supports | None = None) -> list[Finding]:
    """The sampling direction of the model ``chain`` (its data nodes in execution order): from
    the prior's samples (R) back to the dequantizer, each inverse's input set into ``supports``
    (when given); findings for 'inverse-domains'."""
    sup = supports if supports is not None else Supports()
    found: list[Finding] = []
    s: Support = REAL
    for n in reversed(chain):
        d = S.node(g, n)
        role = d.role
        if role in (INPUT, DEQUANTIZER):
            break  # the dequantizer's inverse floors and clamps: it takes any value
        if role == PRIOR:
            if d.density == FINAL:
                s = REAL
            continue
        call = d.call
        op = call.definition
        if role == DROP:
            s = join(s, REAL)  # the inverse puts the dropped part back, drawn from its prior
        need = op.inverse_domain(call.args)
        sup.sampled[n] = s
        if not subset(s, need):
            found.append(Finding("inverse-domains", d.label, (
                f"when sampling, its inverse reads {s} (the prior's samples pulled back through the steps after "
                f"it), but the inverse of {call.op} reads only {need}; to fix: {op.inverse_fix(call.args)}")))
        s = op.inverse_image(call.args, s)
    return found


def propagate(g: nx.DiGraph, chain: list[str]) -> tuple[list[Finding], Supports]:
    """Both directions (``chain``: the model's data nodes in execution order): the findings and
    the supports found."""
    sup = Supports()
    found = forward(g, sup)
    found += backward(g, chain, sup)
    return found, sup


__all__ = ["Supports", "forward", "backward", "propagate"]
