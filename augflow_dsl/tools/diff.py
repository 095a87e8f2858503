"""Spec diffs: a unit-level comparison of two specs, or of one spec under two sets of overrides.
Pure Python: loads, builds and checks both graphs (the one pipeline, graph/pipeline.py), never
imports torch. The command (``augflow-dsl diff A.flow [B.flow]``) is in :mod:`augflow_dsl.cli.diff`.

Design (issue 13, part 3):

* **Two sides.** ``diff A B`` compares two files; ``diff A`` compares a file with itself, so that
  ``--set-a`` / ``--set-b`` (repeatable ``NAME=VALUE``) make the two sides: ``diff
  specs/vflow6ch.flow --set-b filters=64``. ``--set`` applies to both sides and is applied first,
  so ``--set-a`` / ``--set-b`` win over it.
* **Units** are those of ``check --summary`` (``graph.check.units``: a stage, a block's unit, a
  q-network, the dequantizer, the prior), keyed the same way. The two unit lists are aligned in
  order by their labels (difflib on the label sequences): a label found on one side only is
  ``added`` (B only) or ``removed`` (A only); a unit on both sides is ``same`` or ``changed``.
* **Ops within a unit** (every node of the unit: steps, their conditioner and context nets, priors)
  are aligned in order by (role, op name); an aligned pair whose arguments differ is ``changed``
  and lists each changed argument ``old -> new``; unmatched ops are ``added`` / ``removed``. An
  argument that is itself an op call (a coupling's ``net``) is shown by its op name only: the net
  is a node of its own, whose arguments are compared there. A q-network argument is shown as
  ``q NAME``; its steps are the q-network's own unit.
* A unit is ``changed`` when an op in it changed, was added or removed, or its shapes, dims,
  parameters or MACs differ (a wider input changes a unit whose own arguments did not change).
* **Same graph** means: the same data (shape, bits), every unit ``same``, and the same totals
  (parameters by group, MACs, dims). The spec's name, its comments and its ``train:`` block are
  not part of the graph.
* **Exit codes** follow diff(1): 0 the two build the same graph, 1 they differ, 2 trouble: a
  missing file, a spec that does not load or whose graph stops at a shape error (the message is
  printed), a bad ``--set``. A spec that builds but fails the audit is still compared; its
  errors are noted (``valid: false`` in ``--json``), ``augflow-dsl check`` lists them.
* ``--json`` prints one object (:class:`DiffResult`): both sides, ``same``, every unit with its
  status, A and B figures and op changes, the distinct argument changes, and the totals.
"""
from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from ..graph.schema import CONDITIONER, NodeInfo, graph_info, node

Status = Literal["same", "changed", "added", "removed"]
JSONValue = Any


# ---------------------------------------------------------------------------------- JSON boundary
class ArgChange(BaseModel):
    name: str
    a: JSONValue = None
    b: JSONValue = None


class OpChange(BaseModel):
    """One op of a unit that is not the same on both sides."""

    status: Status
    label: str          # the node's label (B's, or A's when removed)
    where: str          # the label relative to its unit ("net: conv_attention"), or the op name
    role: str
    op: str
    args: list[ArgChange] = []   # changed: the arguments that differ

    def text(self) -> str:
        if self.status == "changed":
            return f"{self.where} " + ", ".join(f"{c.name}: {_show(c.a)} -> {_show(c.b)}" for c in self.args)
        return f"{'+' if self.status == 'added' else '-'} {self.where}"


class UnitSide(BaseModel):
    ops: int
    shape_in: list[int]
    shape_out: list[int]
    dims: int
    augmented_so_far: int
    dropped: int
    params: int
    macs: int


class UnitDiff(BaseModel):
    unit: str
    status: Status
    a: UnitSide | None = None
    b: UnitSide | None = None
    ops: list[OpChange] = []


class Delta(BaseModel):
    a: int
    b: int
    delta: int


class Totals(BaseModel):
    parameters: Delta
    flow: Delta
    q: Delta
    dequantizer: Delta
    macs: Delta
    data_dims: Delta
    augmented_dims: Delta
    prior_dims: Delta


class SideInfo(BaseModel):
    file: str
    name: str
    overrides: list[str]
    data: str            # "3x32x32, 8 bits"
    valid: bool
    errors: int


class ChangeSummary(BaseModel):
    """One distinct argument change (op, argument, old -> new) and the units it occurs in."""

    op: str
    name: str
    a: JSONValue = None
    b: JSONValue = None
    units: list[str]


class DiffResult(BaseModel):
    same: bool
    a: SideInfo
    b: SideInfo
    units: list[UnitDiff]
    changes: list[ChangeSummary]
    totals: Totals

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in ("same", "changed", "added", "removed")}
        for u in self.units:
            out[u.status] += 1
        return out


# ---------------------------------------------------------------------------------- loading
class DiffTrouble(Exception):
    """A side could not be compared (diff(1)'s exit 2); the message says why."""


@dataclass
class _Side:
    """One loaded side: its check report and graph."""

    file: str
    overrides: list[str]
    report: Any
    graph: Any
    units: dict[str, Any] = field(default_factory=dict)      # key -> graph.check.UnitRow
    nodes: dict[str, list[NodeInfo]] = field(default_factory=dict)  # key -> the unit's node records, in order


def _unit_key(group: str, unit: str) -> str:
    """The key ``graph.check.units`` gives a node's unit (``check --summary``'s first column)."""
    return unit if group == "flow" else f"{group}: {unit}"


def _data_text(g) -> str:
    info = graph_info(g)
    shape = "x".join(str(s) for s in info.data_shape)
    bits = info.bits
    return f"{shape}, {bits} bits" if bits is not None else f"{shape}, continuous"


def load_side(path: str | Path, overrides: list[str] | None = None) -> _Side:
    """Load, build and check one side; raises :class:`DiffTrouble` with the message when the spec
    is missing, does not load, or its graph stops at a shape error."""
    from ..errors import Source, SpecError
    from ..graph.check import units
    from ..graph.pipeline import analyze
    from ..language.load import load

    path, overrides = str(path), list(overrides or [])
    if not Path(path).is_file():
        raise DiffTrouble(f"error: no such spec file: {path}")
    try:
        spec = load(path, overrides)
    except (SpecError, ValueError) as e:
        raise DiffTrouble(str(e)) from None
    analysis = analyze(spec)
    g, report = analysis.graph, analysis.report
    if not graph_info(g).complete:
        msgs = [str(e.with_source(Source(spec.text, spec.file))) for e in analysis.diagnostics.errors]
        raise DiffTrouble("\n".join(msgs) + f"\n{path}: the graph stops at this shape error; there is nothing "
                          "to compare after it")
    side = _Side(file=path, overrides=overrides, report=report, graph=g)
    for row in units(report):
        side.units[row.unit] = row
    for r in report.nodes:
        side.nodes.setdefault(_unit_key(r.group, r.unit), []).append(node(g, r.id))
    return side


# ---------------------------------------------------------------------------------- comparing
def _value(v) -> JSONValue:
    """An argument value as JSON: an op call by its op name, a q-network as ``q NAME``."""
    from ..ops.registry import OpCall, QFlow

    if isinstance(v, OpCall):
        return v.op
    if isinstance(v, QFlow):
        return f"q {v.name}"
    if isinstance(v, BaseModel):
        return {k: _value(getattr(v, k)) for k in type(v).model_fields}
    if isinstance(v, (list, tuple)):
        return [_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _value(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def _args(info: NodeInfo) -> dict[str, JSONValue]:
    call = info.call
    if call is None or not isinstance(call.args, BaseModel):
        return {}
    return {k: _value(getattr(call.args, k)) for k in type(call.args).model_fields}


def _show(v: JSONValue) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    return json.dumps(v, separators=(", ", ": "))


def _where(label: str, unit: str, op: str) -> str:
    """A node's label relative to its unit: 'net: conv_attention' inside 'stage 3: mixture_coupling'."""
    if label.startswith(unit):
        rest = label[len(unit):].lstrip(",/ ")
        return rest or op
    return label


def _op_changes(a_nodes: list[NodeInfo], b_nodes: list[NodeInfo]) -> list[OpChange]:
    sig_a = [(d.role, d.op) for d in a_nodes]
    sig_b = [(d.role, d.op) for d in b_nodes]
    out: list[OpChange] = []

    def one(d: NodeInfo, status: Status, args=()) -> OpChange:
        return OpChange(status=status, label=d.label, role=d.role, op=d.op, args=list(args),
                        where=_where(d.label, d.unit, d.op))

    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, sig_a, sig_b, autojunk=False).get_opcodes():
        if tag == "equal":
            for da, db in zip(a_nodes[i1:i2], b_nodes[j1:j2]):
                aa, ab = _args(da), _args(db)
                names = list(aa) + [k for k in ab if k not in aa]
                changed = [ArgChange(name=k, a=aa.get(k), b=ab.get(k)) for k in names if aa.get(k) != ab.get(k)]
                if changed:
                    out.append(one(db, "changed", changed))
            continue
        out += [one(d, "removed") for d in a_nodes[i1:i2]]
        out += [one(d, "added") for d in b_nodes[j1:j2]]
    return out


def _unit_side(row) -> UnitSide:
    return UnitSide(ops=row.ops, shape_in=row.shape_in, shape_out=row.shape_out, dims=math.prod(row.shape_out),
                    augmented_so_far=row.augmented_so_far, dropped=row.dropped, params=row.params, macs=row.macs)


def _delta(a: int, b: int) -> Delta:
    return Delta(a=a, b=b, delta=b - a)


def _side_info(s: _Side) -> SideInfo:
    return SideInfo(file=s.file, name=s.report.name, overrides=s.overrides, data=_data_text(s.graph),
                    valid=s.report.valid, errors=len(s.report.errors))


def compare(a: _Side, b: _Side) -> DiffResult:
    """The unit-level comparison of two loaded sides (see the module docstring)."""
    ka, kb = list(a.units), list(b.units)
    rows: list[UnitDiff] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ka, kb, autojunk=False).get_opcodes():
        if tag == "equal":
            for key in ka[i1:i2]:
                sa, sb = _unit_side(a.units[key]), _unit_side(b.units[key])
                ops = _op_changes(a.nodes.get(key, []), b.nodes.get(key, []))
                rows.append(UnitDiff(unit=key, status="changed" if ops or sa != sb else "same", a=sa, b=sb, ops=ops))
            continue
        for key in ka[i1:i2]:
            rows.append(UnitDiff(unit=key, status="removed", a=_unit_side(a.units[key]),
                                 ops=_op_changes(a.nodes.get(key, []), [])))
        for key in kb[j1:j2]:
            rows.append(UnitDiff(unit=key, status="added", b=_unit_side(b.units[key]),
                                 ops=_op_changes([], b.nodes.get(key, []))))
    summary: dict[tuple, ChangeSummary] = {}
    for row in rows:
        for op in row.ops:
            for c in op.args:
                k = (op.op, c.name, json.dumps(c.a, sort_keys=True), json.dumps(c.b, sort_keys=True))
                s = summary.setdefault(k, ChangeSummary(op=op.op, name=c.name, a=c.a, b=c.b, units=[]))
                if row.unit not in s.units:
                    s.units.append(row.unit)
    pa, pb = a.report.parameters, b.report.parameters
    da, db = a.report.dims, b.report.dims
    totals = Totals(parameters=_delta(pa.total, pb.total), flow=_delta(pa.flow, pb.flow), q=_delta(pa.q, pb.q),
                    dequantizer=_delta(pa.dequantizer, pb.dequantizer), macs=_delta(a.report.macs, b.report.macs),
                    data_dims=_delta(da.data, db.data), augmented_dims=_delta(da.augmented, db.augmented),
                    prior_dims=_delta(da.prior, db.prior))
    same = (_data_text(a.graph) == _data_text(b.graph) and all(r.status == "same" for r in rows)
            and all(getattr(totals, f).delta == 0 for f in Totals.model_fields))
    return DiffResult(same=same, a=_side_info(a), b=_side_info(b), units=rows, changes=list(summary.values()),
                      totals=totals)


def diff_specs(a: str | Path, b: str | Path | None = None, overrides: list[str] | None = None,
               overrides_a: list[str] | None = None, overrides_b: list[str] | None = None) -> DiffResult:
    """Compare spec ``a`` with spec ``b`` (``a`` itself when None). ``overrides`` (``"NAME=VALUE"``)
    apply to both sides, then ``overrides_a`` / ``overrides_b`` to one. Raises :class:`DiffTrouble`
    when a side cannot be compared."""
    common = list(overrides or [])
    side_a = load_side(a, common + list(overrides_a or []))
    side_b = load_side(b if b is not None else a, common + list(overrides_b or []))
    return compare(side_a, side_b)


# ---------------------------------------------------------------------------------- printing
def _num(n: int) -> str:
    if abs(n) >= 10**9:
        return f"{n / 1e9:.2f} G"
    if abs(n) >= 10**6:
        return f"{n / 1e6:.2f} M"
    return f"{n:,}"


def _signed(n: int, fmt=lambda v: f"{v:,}") -> str:
    return "0" if n == 0 else ("+" if n > 0 else "-") + fmt(abs(n))


def _pair(a, b, fmt) -> str:
    if a is None:
        return f"-> {fmt(b)}"
    if b is None:
        return f"{fmt(a)} ->"
    return fmt(a) if a == b else f"{fmt(a)} -> {fmt(b)}"


def _shape(s: list[int]) -> str:
    return "x".join(str(v) for v in s)


def _cell(ops: list[OpChange]) -> list[str]:
    """A unit's op changes for its table cell: identical changes to several ops of the unit (the same
    op, status and arguments) once, with their count."""
    groups: dict[tuple, list[OpChange]] = {}
    for o in ops:
        key = (o.status, o.op, json.dumps([c.model_dump() for c in o.args], sort_keys=True))
        groups.setdefault(key, []).append(o)
    out = []
    for same in groups.values():
        o = same[0]
        if len(same) == 1:
            out.append(o.text())
        else:
            args = ", ".join(f"{c.name}: {_show(c.a)} -> {_show(c.b)}" for c in o.args)
            sign = {"added": "+ ", "removed": "- "}.get(o.status, "")
            out.append(f"{sign}{len(same)} x {o.op}" + (f" {args}" if args else ""))
    return out


def _whole(u: UnitDiff) -> str:
    """The cell of a unit found on one side only: its steps and nets counted."""

    nets = sum(o.role == CONDITIONER for o in u.ops)
    sign = "+" if u.status == "added" else "-"
    return f"{sign} {len(u.ops) - nets} steps" + (f", {nets} nets" if nets else "")


MAX_CHANGES_PER_CELL = 3
MAX_UNITS_LISTED = 4


def print_result(r: DiffResult, console, show_all: bool = False) -> None:
    """The rich rendering of ``augflow-dsl diff``."""
    from rich.markup import escape
    from rich.table import Table

    for tag, s in (("A", r.a), ("B", r.b)):
        sets = "  " + " ".join(f"--set {o}" for o in s.overrides) if s.overrides else ""
        console.print(f"[bold]{tag}[/bold]  {escape(s.file)}{escape(sets)}  ({escape(s.name)}; data {s.data})")
    counts = r.counts()
    shown = [u for u in r.units if show_all or u.status != "same"]
    title = (f"{len(r.units)} units" if show_all else
             f"units that differ: {len(shown)} of {len(r.units)}" + (" (--all lists every unit)" if counts["same"] else ""))
    table = Table(title=title, header_style="bold")
    for col, just in (("unit", "left"), ("status", "left"), ("shape out", "left"), ("params A", "right"),
                      ("params B", "right"), ("Δ params", "right"), ("MACs", "right"), ("changes", "left")):
        table.add_column(col, justify=just)
    colour = {"same": "dim", "changed": "yellow", "added": "green", "removed": "red"}
    for u in shown:
        a, b = u.a, u.b
        texts = _cell(u.ops) if u.status in ("same", "changed") else [_whole(u)]
        if len(texts) > MAX_CHANGES_PER_CELL:
            texts = texts[:MAX_CHANGES_PER_CELL] + [f"... {len(texts) - MAX_CHANGES_PER_CELL} more"]
        table.add_row(escape(u.unit), f"[{colour[u.status]}]{u.status}[/]",
                      _pair(a and a.shape_out, b and b.shape_out, _shape),
                      f"{a.params:,}" if a else "", f"{b.params:,}" if b else "",
                      _signed((b.params if b else 0) - (a.params if a else 0)),
                      _pair(a and a.macs, b and b.macs, _num), escape("\n".join(texts)),
                      style="dim" if u.status == "same" else None)
    if shown:
        console.print(table)
    else:
        console.print(f"all {len(r.units)} units are the same")
    if r.changes:
        console.print("[bold]argument changes[/bold]")
        for c in r.changes:
            where = "; ".join(c.units[:MAX_UNITS_LISTED]) + (f"; ... ({len(c.units)} units)"
                                                              if len(c.units) > MAX_UNITS_LISTED else "")
            console.print(f"  {escape(c.op)} {escape(c.name)}: {escape(_show(c.a))} -> {escape(_show(c.b))}"
                          f"   in {escape(where)}", soft_wrap=True)
    t = r.totals
    totals = Table(title="totals", header_style="bold")
    for col in ("", "A", "B", "Δ", "Δ %"):
        totals.add_column(col, justify="left" if not col else "right")
    for name, d, fmt in (("parameters", t.parameters, None), ("  flow", t.flow, None), ("  q", t.q, None),
                         ("  dequantizer", t.dequantizer, None), ("MACs per example", t.macs, _num),
                         ("dims: data", t.data_dims, None), ("  augmented", t.augmented_dims, None),
                         ("  scored by priors", t.prior_dims, None)):
        f = fmt or (lambda v: f"{v:,}")
        pct = f"{100 * d.delta / d.a:+.1f}" if d.a and d.delta else ("" if not d.delta else "new")
        totals.add_row(name, f(d.a), f(d.b), _signed(d.delta, f), pct)
    console.print(totals)
    if r.a.data != r.b.data:
        console.print(f"data: {r.a.data} -> {r.b.data}")
    if r.same:
        console.print("[green]same graph[/green]")
    else:
        console.print(f"[yellow]different[/yellow]: {counts['changed']} changed, {counts['added']} added, "
                      f"{counts['removed']} removed, {counts['same']} same (units)")
