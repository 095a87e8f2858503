"""The static audit of a graph: dimensions, invertibility, cost. Pure Python, no torch.

* dimension bookkeeping: data dims + every augmented dim = every dim handed to a prior,
  stage by stage, from the shapes on the graph (not from the formulas that made them);
* invertibility: the data path holds only bijections, augment points and drops; every
  coupling's conditioner reads only what the inverse pass also has; no cycles; every
  output is consumed;
* cost: parameters and multiply-accumulates per node, in total and by group.
"""
from __future__ import annotations

from typing import Any

import networkx as nx
from pydantic import BaseModel, Field

from ..errors import Source, SpecError
from ..ops.registry import AUGMENT, BIJECTION, CONTEXT, DEQUANTIZER, DROP, PRIOR
from ..ops.shapes import numel
from ..spec.load import load
from ..spec.models import Spec
from .build import CONDITIONER, INPUT, build

DATA_PATH_ROLES = {INPUT, BIJECTION, AUGMENT, DROP, DEQUANTIZER, PRIOR}


class Parameters(BaseModel):
    total: int = 0
    flow: int = 0
    q: int = 0
    dequantizer: int = 0


class Dims(BaseModel):
    data: int = 0
    augmented: int = 0
    prior: int = 0


class StageDims(BaseModel):
    unit: str
    dims_in: int
    augmented: int
    dropped: int
    dims_out: int


class NodeRow(BaseModel):
    id: str
    label: str
    op: str
    role: str
    group: str
    unit: str
    shape_in: list[int]
    shape_out: list[int]
    params: int
    macs: int
    augmented_so_far: int = 0
    dropped: int = 0


class CheckReport(BaseModel):
    """What ``augflow-dsl check`` reports; ``--json`` prints this model."""

    name: str
    file: str
    valid: bool
    complete: bool = True  # False when the spec did not load or a shape error stopped the graph
    parameters: Parameters = Field(default_factory=Parameters)
    macs: int = 0
    dims: Dims = Field(default_factory=Dims)
    stages: list[StageDims] = Field(default_factory=list)
    nodes: list[NodeRow] = Field(default_factory=list)
    errors: list[dict[str, Any]] = Field(default_factory=list)
    warnings: list[dict[str, Any]] = Field(default_factory=list)

    def summary_json(self) -> dict:
        return self.model_dump()


class UnitRow(BaseModel):
    """One unit (or stage, or q-network) of a report: what ``check --summary`` and ``compile`` print."""

    unit: str
    ops: int
    shape_in: list[int]
    shape_out: list[int]
    params: int = 0
    macs: int = 0
    augmented_so_far: int = 0
    dropped: int = 0


def units(report: "CheckReport") -> list[UnitRow]:
    """The report's nodes grouped by unit, in order (conditioners, contexts and priors count
    towards their unit's parameters but not its ops or output shape)."""
    rows: dict[str, UnitRow] = {}
    for r in report.nodes:
        key = r.unit if r.group == "flow" else f"{r.group}: {r.unit}"
        row = rows.setdefault(key, UnitRow(unit=key, ops=0, shape_in=r.shape_in, shape_out=r.shape_out))
        if r.role not in (CONDITIONER, CONTEXT, PRIOR):
            row.ops += 1
            row.shape_out = r.shape_out
        row.params += r.params
        row.macs += r.macs
        row.dropped += r.dropped
        row.augmented_so_far = max(row.augmented_so_far, r.augmented_so_far)
    return list(rows.values())


def audit(g: nx.DiGraph) -> list[str]:
    """Invertibility and wiring problems of a complete graph, each message opening with the
    node's label and a colon."""
    problems: list[str] = []
    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        problems.append(f"the graph has a cycle through {cycle[0][0]}")
        return problems
    order = {n: i for i, n in enumerate(nx.topological_sort(g))}
    for n, d in g.nodes(data=True):
        role = d["role"]
        data_in = [(u, e) for u, _, e in g.in_edges(n, data=True) if e["kind"] == "data"]
        data_out = [(v, e) for _, v, e in g.out_edges(n, data=True) if e["kind"] in ("data", "sample")]
        if data_in or data_out:
            if role not in DATA_PATH_ROLES:
                problems.append(f"{d['label']}: a {role} stands on the data path; only bijections, augment points, "
                                f"drops and priors may")
        if role in (BIJECTION, AUGMENT, DROP, DEQUANTIZER) and not data_out:
            problems.append(f"{d['label']}: its output is never consumed")
        if role == DROP and len(data_out) != 2:
            problems.append(f"{d['label']}: a drop must hand one output on and one to a prior")
        if role == INPUT and d.get("chain") == "p" and not data_out:
            problems.append("input: the data reaches nothing")
        if role in (BIJECTION, DROP) and len(data_in) != 1:
            problems.append(f"{d['label']}: expects one data input, has {len(data_in)}")
        if role in (BIJECTION, AUGMENT, DROP) and data_in:
            if tuple(data_in[0][1]["shape"]) != tuple(d["shape_in"]):
                problems.append(f"{d['label']}: receives {data_in[0][1]['shape']} but expects {d['shape_in']}")
        if role in (BIJECTION,) and numel(d["shape_in"]) != numel(d["shape_out"]):
            problems.append(f"{d['label']}: a bijection must keep its dims ({numel(d['shape_in'])} -> "
                            f"{numel(d['shape_out'])})")
        # conditioners: what does each read?
        if role == CONDITIONER:
            owner = d["owner"]
            od = g.nodes[owner]
            for u, _, e in g.in_edges(n, data=True):
                if e["kind"] == "context":
                    continue
                if od["role"] == AUGMENT:
                    # forward-only: g may read anything computed before the augment point
                    if order[u] >= order[owner]:
                        problems.append(f"{d['label']}: reads {g.nodes[u]['label']}, computed after its augment point")
                    continue
                pred = [p for p, _, pe in g.in_edges(owner, data=True) if pe["kind"] == "data"]
                passthrough = od["call"].definition.passthrough(od["call"].args, tuple(od["shape_in"]))
                if u not in pred or passthrough is None or e.get("part") != passthrough:
                    problems.append(f"{d['label']}: reads {e.get('part', 'a tensor')} of {g.nodes[u]['label']}, "
                                    f"which the inverse of {od['label']} cannot see")
        if role == CONTEXT:
            for u, _, e in g.in_edges(n, data=True):
                if g.nodes[u]["chain"] == d["chain"]:
                    problems.append(f"{d['label']}: a context net must read the conditioning data, not its own flow")
    reach = nx.descendants(g, INPUT) | {INPUT} if INPUT in g else set()
    for n, d in g.nodes(data=True):
        if d.get("chain") == "p" and n not in reach:
            problems.append(f"{d['label']}: not reached from the input")
    return problems


def dims_table(g: nx.DiGraph) -> tuple[Dims, list[StageDims], dict[str, tuple[int, int]]]:
    """Stage-by-stage dims of the model chain, read off the graph's shapes."""
    p_nodes = sorted((n for n, d in g.nodes(data=True)
                      if (d["chain"] == "p" and d["role"] != CONDITIONER and not n.endswith("/prior"))
                      or n == "p/prior"),
                     key=lambda n: g.nodes[n]["order"])
    data = numel(g.graph["data_shape"])
    stages: dict[str, StageDims] = {}
    aug = drop = 0
    per_node: dict[str, tuple[int, int]] = {}
    final = 0
    for n in p_nodes:
        d = g.nodes[n]
        if d["role"] in (INPUT, DEQUANTIZER):
            continue
        if d["role"] == PRIOR:
            final = numel(d["shape_in"])
            continue
        unit = d["unit"]
        row = stages.get(unit)
        if row is None:
            row = stages[unit] = StageDims(unit=unit, dims_in=numel(d["shape_in"]), augmented=0, dropped=0,
                                           dims_out=0)
        if d["role"] == AUGMENT:
            added = numel(d["shape_out"]) - numel(d["shape_in"])
            aug += added
            row.augmented += added
        if d["role"] == DROP:
            dropped = numel(d["shape_in"]) - numel(d["shape_out"])
            drop += dropped
            row.dropped += dropped
        row.dims_out = numel(d["shape_out"])
        per_node[n] = (aug, drop)
    return Dims(data=data, augmented=aug, prior=drop + final), list(stages.values()), per_node


def check_graph(spec: Spec, g: nx.DiGraph, diag) -> CheckReport:
    errors = list(diag.errors)
    report = CheckReport(name=spec.name, file=spec.file, valid=False)
    for w in list(spec.warnings) + list(diag.warnings):
        w.with_source(Source(spec.text, spec.file))
        report.warnings.append(w.to_dict() | {"text": str(w)})
    if g.graph.get("complete"):
        # labels themselves hold ": " ("stage 3: mixture_coupling"): match the longest label a message opens with
        locs = {}
        for _, d in g.nodes(data=True):
            locs.setdefault(d["label"], d.get("loc"))
        by_length = sorted(locs, key=len, reverse=True)
        for msg in audit(g):
            label = next((lb for lb in by_length if msg.startswith(lb + ": ")), None)
            if label is None:
                errors.append(SpecError(msg))
            else:
                errors.append(SpecError(msg[len(label) + 2:].strip(), locs[label], node=label))
        dims, stages, per_node = dims_table(g)
        report.dims, report.stages = dims, stages
        declared = sum(d.get("added", 0) for _, d in g.nodes(data=True) if d["role"] == AUGMENT and d["chain"] == "p")
        if declared != dims.augmented:
            errors.append(SpecError(f"augment points declare {declared} added dims but their shapes add "
                                    f"{dims.augmented}"))
        if dims.data + dims.augmented != dims.prior:
            errors.append(SpecError(f"dims do not add up: data {dims.data:,} + augmented {dims.augmented:,} = "
                                    f"{dims.data + dims.augmented:,}, but the priors score {dims.prior:,}"))
    else:
        per_node = {}
        report.dims.data = numel(g.graph["data_shape"])  # the rest is unknown after a shape error
        report.complete = False
    params = Parameters()
    macs = 0
    for n, d in sorted(g.nodes(data=True), key=lambda kv: kv[1]["order"]):
        setattr(params, d["group"], getattr(params, d["group"]) + d["params"])
        macs += d["macs"]
        aug_so_far, dropped = per_node.get(n, (0, 0))
        report.nodes.append(NodeRow(id=n, label=d["label"], op=d["op"], role=d["role"], group=d["group"],
                                    unit=d["unit"], shape_in=list(d["shape_in"]), shape_out=list(d["shape_out"]),
                                    params=d["params"], macs=d["macs"], augmented_so_far=aug_so_far,
                                    dropped=d.get("dropped", 0)))
    params.total = params.flow + params.q + params.dequantizer
    report.parameters, report.macs = params, macs
    for e in errors:
        e.with_source(Source(spec.text, spec.file))
        report.errors.append(e.to_dict() | {"text": str(e)})
    report.valid = not errors
    return report


def check(spec: Spec | str, overrides=None) -> CheckReport:
    """Load (if given a path), build and audit; never raises for a bad spec."""
    if not isinstance(spec, Spec):
        try:
            spec = load(spec, overrides)
        except SpecError as e:  # the spec did not load: no graph, so the report is not complete
            from ..errors import all_errors
            return CheckReport(name=str(spec), file=str(spec), valid=False, complete=False,
                               errors=[x.to_dict() | {"text": str(x)} for x in all_errors(e)])
    g, diag = build(spec)
    return check_graph(spec, g, diag)
