"""The static check of a spec: graph, audit, dimensions, cost. Pure Python, no torch.

* the audit (graph/audit.py): every property a correct log-likelihood depends on, derived
  from the graph -- invertibility of the data path, what each conditioner, g and q reads,
  one density per dim, a q per augmented dim, and the supports (ranges) every op declares;
  the report lists the properties it proved (``proved``);
* dimension bookkeeping: data dims + every augmented dim = every dim handed to a prior,
  stage by stage, from the shapes on the graph (not from the formulas that made them);
* cost: parameters and multiply-accumulates per node, in total and by group.

:func:`check_graph` builds the report of a built graph; the one load -> build -> check
pipeline that calls it is :func:`augflow_dsl.graph.pipeline.analyze`.
"""
from __future__ import annotations

from typing import Any

import networkx as nx
from pydantic import BaseModel, Field

from ..errors import Source, SpecError
from ..ops.registry import AUGMENT, CONTEXT, DEQUANTIZER, DROP, PRIOR
from ..ops.shapes import numel
from ..language.models import Spec
from . import schema as S
from .audit import PROPERTIES, audit_graph
from .builder import data_chain
from .schema import CONDITIONER, FACTORED, FINAL, INPUT, MODEL


class Parameters(BaseModel):
    total: int = 0
    flow: int = 0
    q: int = 0
    dequantizer: int = 0
    condition: int = 0  # the condition's shared embedding (conditional priors count in flow)


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


class Proved(BaseModel):
    """A property the audit established for this spec, and how."""

    id: str
    statement: str
    how: str
    by_construction: str | None = None  # why no spec can violate it (it is still checked on the graph)
    covered: str = ""                    # what it covered here, e.g. "74 coupling nets"
    short: str = ""

    def line(self) -> str:
        """One line for ``augflow-dsl check``."""
        by = "  [by construction]" if self.by_construction else ""
        return f"{self.id}: {self.short or self.statement} ({self.covered}){by}"


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
    proved: list[Proved] = Field(default_factory=list)


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
    """The audit's errors on a complete graph, each message opening with the node's label and
    a colon (graph/audit.py holds the properties; its warnings, coverage's, are left out)."""
    found, _ = audit_graph(g, data_chain(g, MODEL))
    return [str(f) for f in found if f.kind == "error"]


def dims_table(g: nx.DiGraph) -> tuple[Dims, list[StageDims], dict[str, tuple[int, int]]]:
    """Stage-by-stage dims of the model chain, read off the graph's shapes."""
    p_nodes = [(n, d) for n, d in S.nodes(g)
               if (d.chain == MODEL and d.role != CONDITIONER and d.density != FACTORED) or d.density == FINAL]
    data = numel(S.graph_info(g).data_shape)
    stages: dict[str, StageDims] = {}
    aug = drop = 0
    per_node: dict[str, tuple[int, int]] = {}
    final = 0
    for n, d in p_nodes:
        if d.role in (INPUT, DEQUANTIZER):
            continue
        if d.role == PRIOR:
            final = numel(d.shape_in)
            continue
        unit = d.unit
        row = stages.get(unit)
        if row is None:
            row = stages[unit] = StageDims(unit=unit, dims_in=numel(d.shape_in), augmented=0, dropped=0,
                                           dims_out=0)
        if d.role == AUGMENT:
            added = numel(d.shape_out) - numel(d.shape_in)
            aug += added
            row.augmented += added
        if d.role == DROP:
            dropped = numel(d.shape_in) - numel(d.shape_out)
            drop += dropped
            row.dropped += dropped
        row.dims_out = numel(d.shape_out)
        per_node[n] = (aug, drop)
    return Dims(data=data, augmented=aug, prior=drop + final), list(stages.values()), per_node


MAX_PARAMETERS = 10**11  # 400 GB in fp32, more than any one accelerator holds (issue 24: 9e12 passed check)
MAX_ELEMENTS = 2**40  # values in one tensor of one example: 4 TiB in fp32


def size_errors(g: nx.DiGraph, total_params: int) -> list[SpecError]:
    """Refuse a spec no machine can hold: more than :data:`MAX_PARAMETERS` parameters (located at
    the node with the most), or a tensor of more than :data:`MAX_ELEMENTS` values per example."""
    errors = []
    nodes = S.nodes(g)
    if total_params > MAX_PARAMETERS and nodes:
        _, big = max(nodes, key=lambda nd: nd[1].params)
        errors.append(SpecError(f"the spec has {total_params:,} parameters ({4 * total_params / 1e12:,.1f} TB in "
                                f"fp32); a spec may have at most {MAX_PARAMETERS:,}. The largest node holds "
                                f"{big.params:,}", big.loc, node=big.label))
    for _, d in nodes:
        worst = max(numel(d.shape_in), numel(d.shape_out))
        if worst > MAX_ELEMENTS:
            errors.append(SpecError(f"a tensor of {worst:,} values per example (shape "
                                    f"{list(d.shape_out if numel(d.shape_out) == worst else d.shape_in)}); "
                                    f"a tensor may hold at most 2^40 = {MAX_ELEMENTS:,}", d.loc, node=d.label))
            break
    return errors


def check_graph(spec: Spec, g: nx.DiGraph, diag) -> CheckReport:
    """The report of ``spec``'s built graph ``g`` (``diag``: the build's diagnostics)."""
    errors = list(diag.errors)
    props: dict[int, str] = {}  # id(error) -> the audit property it violates
    report = CheckReport(name=spec.name, file=spec.file, valid=False)
    for w in list(spec.warnings) + list(diag.warnings):
        w.with_source(Source(spec.text, spec.file))
        report.warnings.append(w.to_dict() | {"text": str(w)})
    nodes = S.nodes(g)
    if S.graph_info(g).complete:
        # labels themselves hold ": " ("stage 3: mixture_coupling"): match the longest label a message opens with
        locs = {}
        for _, d in nodes:  # a default net (cross_unit's g) is located at its owner
            locs.setdefault(d.label, d.loc or (S.node(g, d.owner).loc if d.owner is not None else None))
        found, covered = audit_graph(g, data_chain(g, MODEL))
        for f in found:
            if f.kind == "warning":  # flagged, not refused (graph/coverage_audit.py says why)
                w = SpecError(f.message, locs.get(f.node), Source(spec.text, spec.file), node=f.node, kind="warning")
                report.warnings.append(w.to_dict() | {"text": str(w), "property": f.prop})
                continue
            errors.append(SpecError(f.message, locs.get(f.node), node=f.node))
            props[id(errors[-1])] = f.prop
        failed = {f.prop for f in found}
        dims, stages, per_node = dims_table(g)
        report.dims, report.stages = dims, stages
        declared = sum(d.added for _, d in nodes if d.role == AUGMENT and d.chain == MODEL)
        if declared != dims.augmented:
            errors.append(SpecError(f"augment points declare {declared} added dims but their shapes add "
                                    f"{dims.augmented}"))
        if dims.data + dims.augmented != dims.prior:
            errors.append(SpecError(f"dims do not add up: data {dims.data:,} + augmented {dims.augmented:,} = "
                                    f"{dims.data + dims.augmented:,}, but the priors score {dims.prior:,}"))
            failed.add("one-density")
        if declared != dims.augmented:
            failed.add("augment-scored")
        if covered:
            report.proved = [Proved(id=p.id, statement=p.statement, how=p.derivation, short=p.short,
                                    by_construction=p.construction, covered=covered.get(p.id, ""))
                             for p in PROPERTIES if p.id not in failed]
    else:
        per_node = {}
        report.dims.data = numel(S.graph_info(g).data_shape)  # the rest is unknown after a shape error
        report.complete = False
    params = Parameters()
    macs = 0
    for n, d in nodes:
        setattr(params, d.group, getattr(params, d.group) + d.params)
        macs += d.macs
        aug_so_far, dropped = per_node.get(n, (0, 0))
        report.nodes.append(NodeRow(id=n, label=d.label, op=d.op, role=d.role, group=d.group,
                                    unit=d.unit, shape_in=list(d.shape_in), shape_out=list(d.shape_out),
                                    params=d.params, macs=d.macs, augmented_so_far=aug_so_far,
                                    dropped=d.dropped))
    params.total = params.flow + params.q + params.dequantizer + params.condition
    report.parameters, report.macs = params, macs
    errors += size_errors(g, params.total)
    for e in errors:
        e.with_source(Source(spec.text, spec.file))
        report.errors.append(e.to_dict() | {"text": str(e)} | ({"property": props[id(e)]} if id(e) in props else {}))
    report.valid = not errors
    return report
