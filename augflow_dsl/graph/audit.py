"""The audit: every property a correct log-likelihood depends on, each derived from the graph.

:data:`PROPERTIES` lists them (docs/audit.md explains each); :func:`audit_graph` checks a
complete graph and returns the findings (node label, reason, fix) and, per property, what it
established. A property whose violation the language cannot write says so ("by construction")
and why; it is still checked on the graph, so a builder bug or a hand-edited graph is caught.
Pure Python, no torch.
"""
from __future__ import annotations

import networkx as nx

from ..ops.registry import AUGMENT, BIJECTION, CONTEXT, DEQUANTIZER, DROP, PRIOR, SCORED_BY_FIXED, SCORED_BY_NET
from ..ops.regions import Read, Region
from ..ops.shapes import numel
from . import schema as S
from . import coverage_audit, support_audit
from .findings import Finding, Property
from .schema import CONDITION, CONDITIONER, DATA, DROPPED, INPUT, MODEL, PARAMS, Q_BASE, SAMPLE, EdgeInfo

DATA_PATH_ROLES = {INPUT, BIJECTION, AUGMENT, DROP, DEQUANTIZER, PRIOR}
_GRAPH_ONLY = "this cannot be written in a spec: the graph was built or edited wrongly"


PROPERTIES: tuple[Property, ...] = (
    Property("data-path", "the data path is made only of bijections, augment points, drops, a dequantizer and "
             "priors, acyclic, every output consumed, every bijection keeping its dims",
             "roles, in/out data edges and edge shapes of every node; networkx acyclicity; reachability from x",
             "the builder places only the roles each slot allows and refuses the rest with the node",
             short="data path: bijections, augment points, drops and priors only"),
    Property("conditioner-reads", "a conditioner reads only what the inverse has when it runs",
             "each condition edge's Read(node, port, region) must come from its owner's data input and its "
             "region (channels x positions) must lie within the owner's unchanged region, both computed from "
             "the op's split rules (ops/regions.py)",
             "the builder wires each net to its owner's input with the owner's `reads` region; a new op that "
             "declares no `unchanged` region (or reads more) is refused",
             short="each coupling net reads only its coupling's unchanged part"),
    Property("cross-unit-reads", "a cross-unit g reads only its block's input and the outputs of the block's "
             "earlier units (z_<i, DenseFlow eq. 6)",
             "the nodes' block/unit annotations give the block input (data input of the block's first node) and "
             "each unit's output (data input of its cross-unit coupling); every read of g must be one of them, "
             "whole, and computed before g's augment point",
             "a block's augment is wired by the builder to cat(block input, unit outputs so far)",
             short="each cross-unit g reads only its block's earlier outputs"),
    Property("one-density", "every dim reaches exactly one density",
             "every output port of a data-path node has exactly one consumer, every sink is a prior that reads "
             "one tensor, dims are conserved node by node (edge shapes), and data + augmented = dims scored",
             short="every dim reaches exactly one density"),
    Property("augment-scored", "every augmented dim is scored by a q",
             "each input augment point receives one sample from a q-network whose base scores exactly the "
             "dims it adds; each cross-unit coupling has a g emitting a mean and a log-scale per added dim; "
             "a variational dequantizer receives one sample of D dims from its r",
             "input(...) and variational(...) require `q:`; cross_unit always owns a g",
             short="every augmented dim is scored by a q"),
    Property("q-reads-data", "q-networks read only the data",
             "every edge into a q-chain from outside it is the context net's read of the data its q is "
             "conditioned on (x for a dequantizer's r, the dequantized x~ for an input augmentation's q), or a "
             "context edge from the spec's condition y (given with x: q(z | x, y)); its couplings' other context "
             "edges come from its own context net",
             "a q's context is handed only the data by the builder; a q's flow cannot name model nodes",
             short="q-networks read only the data"),
    Property("read-before-drop", "nothing is read after it is dropped",
             "a drop's dropped part goes to exactly its own prior and is read by nothing else; every read by a g "
             "or a context net comes from a node that runs before its reader (so, sampling, nothing reads dims "
             "an augment point's inverse has already dropped)",
             "the dropped part of a drop is an edge the builder hands only to its prior",
             short="nothing is read after it is dropped"),
    Property("domains", "every op's input lies in the set it declares: a logit reads (0, 1), data of `bits` "
             "meets the ops that expect it",
             "supports propagated forward from x (Integers(bits) or R) and from each q's base noise (R) through "
             "each op's declared image (graph/support_audit.py), compared with each op's declared domain",
             short="every op's input lies in its declared domain"),
    Property("dequantizer-noise", "a dequantizer's noise lies in the unit bin [0, 1)^D",
             "the support of the sample its q hands it (propagated through the q-flow), or uniform's [0, 1)",
             short="dequantization noise lies in [0, 1)^D"),
    Property("inverse-domains", "sampling, every inverse reads inside its domain: a sigmoid's inverse reads (0, 1)",
             "supports propagated backward from the prior's samples (R) through each op's declared inverse image, "
             "compared with each inverse's declared domain",
             short="sampling, every inverse reads inside its domain"),
    coverage_audit.PROPERTY,
)
PROPERTY_IDS = tuple(p.id for p in PROPERTIES)


def _data_in(g, n) -> list[tuple[str, EdgeInfo]]:
    return list(S.in_edges(g, n, DATA))


def _out(g, n, kinds=(DATA, SAMPLE)) -> list[tuple[str, EdgeInfo]]:
    return list(S.out_edges(g, n, *kinds))


def _label(g, n) -> str:
    return S.node(g, n).label


# ---------------------------------------------------------------------------------------- properties
def data_path(g: nx.DiGraph) -> list[Finding]:
    f: list[Finding] = []

    def add(n, msg):
        f.append(Finding("data-path", _label(g, n) if n is not None else None, msg))

    for n, d in S.nodes(g):
        role = d.role
        data_in = _data_in(g, n)
        data_out = _out(g, n)
        if (data_in or data_out) and role not in DATA_PATH_ROLES:
            add(n, f"a {role} stands on the data path; only bijections, augment points, drops and priors may")
        if role in (BIJECTION, AUGMENT, DROP, DEQUANTIZER) and not data_out:
            add(n, "its output is never consumed")
        if role == DROP and len(data_out) != 2:
            add(n, "a drop must hand one output on and one to a prior")
        if role == INPUT and d.chain == MODEL and not data_out:
            f.append(Finding("data-path", INPUT, "the data reaches nothing"))
        if role in (BIJECTION, DROP) and len(data_in) != 1:
            add(n, f"expects one data input, has {len(data_in)}")
        if role in (BIJECTION, AUGMENT, DROP) and data_in:
            if tuple(data_in[0][1].shape) != tuple(d.shape_in):
                add(n, f"receives {data_in[0][1].shape} but expects {d.shape_in}")
        if role == BIJECTION and numel(d.shape_in) != numel(d.shape_out):
            add(n, f"a bijection must keep its dims ({numel(d.shape_in)} -> {numel(d.shape_out)})")
    reach = nx.descendants(g, INPUT) | {INPUT} if INPUT in g else set()
    for n, d in S.nodes(g):
        if d.chain == MODEL and n not in reach:
            add(n, "not reached from the input")
    return f


def conditioner_reads(g: nx.DiGraph) -> list[Finding]:
    """Each coupling-like net reads, of its owner's input, only what the owner leaves unchanged."""
    f: list[Finding] = []
    for k, d in S.nodes(g):
        if d.role != CONDITIONER or S.node(g, d.owner).role == AUGMENT:
            continue
        o = d.owner
        od = S.node(g, o)
        call = od.call
        inputs = {(u, e.port) for u, e in _data_in(g, o)}
        unchanged = call.definition.unchanged(call.args, tuple(od.shape_in))
        for u, e in S.in_edges(g, k, CONDITION):
            part = e.part
            src = _label(g, u)
            if not isinstance(part, Read) or part.node != u:
                f.append(Finding("conditioner-reads", d.label, (
                    f"its read of {src} carries no region of that node ({part!r}), so nothing shows the inverse "
                    f"of {od.label} has it; {_GRAPH_ONLY}")))
                continue
            if (u, part.port) not in inputs:
                f.append(Finding("conditioner-reads", d.label, (
                    f"reads {part.region} of {src}, which is not the input of {od.label}: the inverse of "
                    f"{od.label} has only that op's output when it runs the net; {_GRAPH_ONLY}")))
            elif unchanged is None:
                f.append(Finding("conditioner-reads", d.label, (
                    f"reads {part.region} of {src}, but {od.label} changes every element of its input, so "
                    f"its inverse cannot recompute the net; to fix: the op ('{call.op}') must declare the "
                    f"region it leaves unchanged (`unchanged`) and read only within it")))
            elif not part.region.within(unchanged):
                f.append(Finding("conditioner-reads", d.label, (
                    f"reads {part.region} of {src}, but {od.label} leaves unchanged only {unchanged}: its "
                    f"inverse does not have the rest when it runs the net (and the log-det would miss the "
                    f"off-diagonal terms); to fix: the op ('{call.op}') must read only its identity part")))
    return f


def _block_reads(g: nx.DiGraph, block: tuple[int, int]) -> set[tuple[str, str]]:
    """(node, port) pairs a g of unit ``block[1]`` of block ``block[0]`` may read."""
    b, unit = block
    nodes = [(n, d) for n, d in S.nodes(g) if d.block is not None and d.block[0] == b and d.chain == MODEL]
    allowed: set[tuple[str, str]] = set()
    if nodes:
        allowed |= {(u, e.port) for u, e in _data_in(g, nodes[0][0])}  # the block's input
    for n, d in nodes:
        if d.role == AUGMENT and d.block[1] < unit:
            allowed |= {(u, e.port) for u, e in _data_in(g, n)}  # an earlier unit's output
    return allowed


def cross_unit_reads(g: nx.DiGraph) -> list[Finding]:
    f: list[Finding] = []
    order = {n: d.order for n, d in S.nodes(g)}
    for k, d in S.nodes(g):
        if d.role != CONDITIONER or S.node(g, d.owner).role != AUGMENT:
            continue
        a = d.owner
        block = S.node(g, a).block
        allowed = _block_reads(g, block) if block else set()
        where = "its block's representations (it stands in no block)"
        if block:
            where = f"block {block[0]}'s input" + (f" or the output of its units 1..{block[1] - 1}"
                                                    if block[1] > 1 else "")
        for u, e in S.in_edges(g, k, CONDITION):
            part = e.part
            if not isinstance(part, Read) or part.node != u:
                f.append(Finding("cross-unit-reads", d.label, (
                    f"its read of {_label(g, u)} carries no region of that node; {_GRAPH_ONLY}")))
                continue
            whole = Region.whole(tuple(e.shape))
            if (u, part.port) not in allowed or order[u] >= order[a]:
                f.append(Finding("cross-unit-reads", d.label, (
                    f"reads {_label(g, u)}, which is not {where}: g_i reads only z_<i, the earlier "
                    f"representations of its block (DenseFlow eq. 6); {_GRAPH_ONLY}")))
            elif not whole.within(part.region):
                f.append(Finding("cross-unit-reads", d.label, (
                    f"reads only {part.region} of {_label(g, u)}; g reads whole representations; {_GRAPH_ONLY}")))
    return f


def one_density(g: nx.DiGraph) -> list[Finding]:
    f: list[Finding] = []

    def add(n, msg):
        f.append(Finding("one-density", _label(g, n), msg))

    for n, d in S.nodes(g):
        role = d.role
        if role not in DATA_PATH_ROLES:
            continue
        out = _out(g, n)
        ports: dict[str, list[str]] = {}
        for v, e in out:
            ports.setdefault(e.port if e.kind == DATA else SAMPLE, []).append(v)
        for port, vs in ports.items():
            if len(vs) > 1:
                add(n, f"hands its {port} output to {len(vs)} consumers ({', '.join(_label(g, v) for v in vs)}): "
                       f"its dims would be scored more than once; each dim must reach exactly one density; "
                       f"{_GRAPH_ONLY}")
        ins = _data_in(g, n)
        if role == PRIOR and len(ins) > 1:
            add(n, f"scores {len(ins)} tensors; a prior scores the one tensor handed to it; {_GRAPH_ONLY}")
        if role in (BIJECTION, DROP, AUGMENT) and len(ins) == 1:
            n_in = numel(ins[0][1].shape)
            outs = {e.port: numel(e.shape) for _, e in out if e.kind == DATA}
            n_out = sum(outs.values())
            if role == AUGMENT:
                n_in += numel(d.shape_out) - numel(d.shape_in)
            if outs and n_in != n_out:
                add(n, f"takes {n_in} dims but hands on {n_out}: dims are lost or made up on the way to the "
                       f"densities; {_GRAPH_ONLY}")
        if role in (BIJECTION, AUGMENT, DROP, DEQUANTIZER, INPUT):
            for v, e in out:
                if S.node(g, v).role not in DATA_PATH_ROLES:
                    add(n, f"hands its output to {_label(g, v)}, which is no density nor flow step; {_GRAPH_ONLY}")
    return f


def augment_scored(g: nx.DiGraph) -> list[Finding]:
    f: list[Finding] = []
    for n, d in S.nodes(g):
        if d.role not in (AUGMENT, DEQUANTIZER) or d.chain != MODEL:
            continue
        added = numel(d.shape_out) - numel(d.shape_in) if d.role == AUGMENT else numel(d.shape_in)
        samples = list(S.in_edges(g, n, SAMPLE))
        scored_by = d.call.definition.scored_by
        if scored_by == SCORED_BY_NET:
            gs = [u for u, _ in S.in_edges(g, n, PARAMS)]
            emitted = sum(numel(S.node(g, u).shape_out) for u in gs)
            if len(gs) != 1 or emitted != 2 * added:
                f.append(Finding("augment-scored", d.label, (
                    f"adds {added} dims but its g emits {emitted} numbers; a mean and a log-scale per added dim "
                    f"(2 x {added}) make the Gaussian that scores them (DenseFlow eq. 9); {_GRAPH_ONLY}")))
            continue
        if scored_by == SCORED_BY_FIXED:
            continue  # e.g. r = U[0, 1)^D: density 1, log r = 0 for every dim; the layer scores the rest
        what = "augmented" if d.role == AUGMENT else "dequantization noise"
        if len(samples) != 1:
            f.append(Finding("augment-scored", d.label, (
                f"receives {len(samples)} q samples; its {added} {what} dims must be drawn, and scored, by exactly "
                f"one q; {_GRAPH_ONLY}")))
            continue
        u, e = samples[0]
        chain = S.node(g, u).chain
        scored = sum(bd.dims for _, bd in S.nodes(g) if bd.chain == chain and bd.density == Q_BASE)
        if numel(e.shape) != added or scored != added:
            f.append(Finding("augment-scored", d.label, (
                f"its {added} {what} dims come from {_q_words(chain)}, whose sample has {numel(e.shape)} dims "
                f"and whose base scores {scored}; log q must score every one of them; {_GRAPH_ONLY}")))
    return f


def q_reads_data(g: nx.DiGraph) -> list[Finding]:
    f: list[Finding] = []
    all_nodes = S.nodes(g)
    chains = {d.chain for _, d in all_nodes if S.is_q_chain(d.chain)}
    for chain in sorted(chains):
        nodes = {n for n, d in all_nodes if d.chain == chain}
        consumers = [(v, e) for n in nodes for v, e in S.out_edges(g, n) if v not in nodes]
        data = set()
        for v, e in consumers:
            if e.kind != SAMPLE:
                f.append(Finding("q-reads-data", _label(g, v), (
                    f"reads {_q_words(chain)} through a {e.kind} edge; a q hands on only its sample; {_GRAPH_ONLY}")))
            else:
                data |= {(u, e2.port) for u, e2 in _data_in(g, v)}
        context = [n for n in nodes if S.node(g, n).role == CONTEXT]
        for n in nodes:
            for u, e in S.in_edges(g, n):
                if u in nodes:
                    ok = e.kind != S.CONTEXT or S.node(g, u).role == CONTEXT
                elif u == S.LABEL:  # the condition y: given with x, so q(z | x, y) may read it (a context edge)
                    ok = e.kind == S.CONTEXT
                else:
                    ok = e.kind == CONDITION and n in context and (u, e.port) in data
                if not ok:
                    what = (" (" + ", ".join(_label(g, x) for x, _ in sorted(data)) + ")") if data else ""
                    f.append(Finding("q-reads-data", _label(g, n), (
                        f"reads {_label(g, u)}; {_q_words(chain)} may read only the data it is conditioned on{what}, "
                        f"through its context net (q(z | x), VFlow eq. 4); {_GRAPH_ONLY}")))
    return f


def read_before_drop(g: nx.DiGraph) -> list[Finding]:
    f: list[Finding] = []
    order = {n: d.order for n, d in S.nodes(g)}
    for n, d in S.nodes(g):
        if d.role == DROP:
            readers = [(v, e) for v, e in S.out_edges(g, n) if e.port == DROPPED]
            bad = [v for v, e in readers if e.kind != DATA or S.node(g, v).role != PRIOR]
            if bad or len(readers) != 1:
                names = ", ".join(_label(g, v) for v in bad) or f"{len(readers)} readers"
                f.append(Finding("read-before-drop", d.label, (
                    f"its dropped part is read by {names}; once dropped, dims go to their prior and nothing "
                    f"else reads them (sampling, they are drawn only when the inverse reaches the drop); "
                    f"{_GRAPH_ONLY}")))
        if d.is_net:
            reader = (d.owner or n) if d.role == CONDITIONER else n
            if d.role == CONDITIONER and S.node(g, reader).role != AUGMENT:
                continue  # a coupling's reads: conditioner-reads
            for u, _ in S.in_edges(g, n, CONDITION):
                if order[u] >= order[reader]:
                    f.append(Finding("read-before-drop", d.label, (
                        f"reads {_label(g, u)}, which runs after {_label(g, reader)}: sampling, the inverse has "
                        f"dropped those dims before it gets there; {_GRAPH_ONLY}")))
    return f


CHECKS = {
    "data-path": data_path, "conditioner-reads": conditioner_reads, "cross-unit-reads": cross_unit_reads,
    "one-density": one_density, "augment-scored": augment_scored, "q-reads-data": q_reads_data,
    "read-before-drop": read_before_drop,
}


def _evidence(g: nx.DiGraph, supports: support_audit.Supports) -> dict[str, str]:
    """What each proved property covered in this graph (counts)."""
    roles = [d for _, d in S.nodes(g)]
    conds = [d for d in roles if d.role == CONDITIONER]
    gs = sum(1 for d in conds if S.node(g, d.owner).role == AUGMENT)
    augs = [d for d in roles if d.role == AUGMENT]
    qs = {d.chain for d in roles if S.is_q_chain(d.chain)}
    drops = sum(1 for d in roles if d.role == DROP)
    priors = sum(1 for d in roles if d.role == PRIOR)
    steps = sum(1 for d in roles if d.role in (BIJECTION, DROP, AUGMENT, DEQUANTIZER))
    ctx = sum(1 for d in roles if d.role == CONTEXT)
    sampled = len(supports.sampled)
    return {
        "data-path": _count(steps, "flow step"),
        "conditioner-reads": _count(len(conds) - gs, "coupling net"),
        "cross-unit-reads": _count(gs, "g-network"),
        "one-density": _count(priors, "density", "densities"),
        "augment-scored": _count(len(augs), "augment point"),
        "q-reads-data": _count(len(qs), "q-network"),
        "read-before-drop": f"{_count(drops, 'drop')}, {_count(gs + ctx, 'forward-only reader')}",
        "domains": _count(steps + ctx, "op"),
        "dequantizer-noise": next((d.op for d in roles if d.role == DEQUANTIZER), "no dequantizer"),
        "inverse-domains": _count(sampled, "inverse"),
    }


def _q_words(chain: str) -> str:
    """A q chain as the findings name it: ``q 'name'`` (any other chain, on a hand-edited graph, by its id)."""
    return f"q '{S.q_name(chain)}'" if S.is_q_chain(chain) else f"chain '{chain}'"


def _count(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def audit_graph(g: nx.DiGraph, chain: list[str]) -> tuple[list[Finding], dict[str, str]]:
    """All findings on a complete graph (``chain``: the model's data nodes in order), and the
    evidence string of every property checked. A cycle stops the audit (orders are meaningless)."""
    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        return [Finding("data-path", None, f"the graph has a cycle through {cycle[0][0]}")], {}
    found: list[Finding] = []
    for check in CHECKS.values():
        found += check(g)
    supported, supports = support_audit.propagate(g, chain)
    uncovered, covered = coverage_audit.coverage(g, chain)
    return found + supported + uncovered, _evidence(g, supports) | {"coverage": covered}


__all__ = ["PROPERTIES", "PROPERTY_IDS", "Property", "Finding", "audit_graph"]
