"""Layout: a complete graph -> :class:`~.picture.Picture`. One column, data at the top, latent at the
bottom; consecutive plain stages of one shape make one box, a block one box with a grid of unit cells;
q-networks and the priors of drops beside the steps they feed or take from. Every graph read goes
through :mod:`augflow_dsl.graph.schema`."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ...graph import schema as S
from ...ops.registry import AUGMENT, COMPOSITE, CONTEXT, DEQUANTIZER, DROP, PRIOR
from .picture import (CELLS_PER_ROW, MAX_CELLS, Box, Cell, Picture, Side, num, sequence, shape_text, short,
                      tensor)

@dataclass
class _Unit:
    name: str
    nodes: list[str]                 # its steps on the model chain, in order


def _params(g, unit: str, chain: str = S.MODEL) -> tuple[int, int]:
    ps = ms = 0
    for _, d in S.nodes(g):
        if d.chain == chain and d.unit == unit:
            ps += d.params
            ms += d.macs
    return ps, ms


def _cost(params: int, macs: int) -> str:
    return f"{params:,} params \u00b7 {num(macs)} MACs" if params or macs else "no parameters"


def _nets(g, nodes: list[str]) -> str:
    """The conditioner nets the steps own, by slot: 'net: conv_attention'."""
    seen: dict[str, None] = {}
    for n in nodes:
        for kid in g.predecessors(n):
            d = S.node(g, kid)
            if d.role == S.CONDITIONER and d.owner == n:
                reads_y = S.LABEL in g and g.has_edge(S.LABEL, kid)
                seen.setdefault(f"{d.slot or 'net'}: {d.op}" + (" (+ y)" if reads_y else ""))
    return ", ".join(seen)


def _condition_side(spec, g) -> Side:
    """The condition y beside the data box: what it is, its embedding, and what reads it."""
    c, d = spec.condition, S.node(g, S.LABEL)
    readers = [S.node(g, v) for v, _ in S.out_edges(g, S.LABEL)]
    nets = sum(1 for r in readers if r.is_net)
    dens = [r.op for r in readers if not r.is_net]
    kind = f"a label, {c.classes} classes" if c.classes is not None else f"a context vector of {c.vector}"
    lines = [kind, (f"embedding \u2192 {c.embed} ({d.params:,} params)" if c.embed else
                    f"no embedding: nets read the {'one-hot label' if c.classes else 'vector'}"),
             f"read by {nets} coupling net{'s' if nets != 1 else ''}" + (f", {', '.join(dens)}" if dens else "")]
    return Side(kind="condition", title="condition y", lines=lines, arrow="y", into_main=True)


def _qside(g, chain: str, sample_shape) -> Side:
    data = [d for _, d in S.nodes(g) if d.chain == chain]
    params = sum(d.params for d in data)
    macs = sum(d.macs for d in data)
    lines = []
    ctx = next((d for d in data if d.role == CONTEXT), None)
    if ctx is not None:
        lines.append(f"context: {ctx.op} \u2192 {shape_text(ctx.shape_out)}")
    base = next((d for d in data if d.role == PRIOR), None)
    if base is not None:
        lines.append(f"base: {base.op} {shape_text(base.shape_out)}")
    steps = [d.call for d in data if d.role not in (CONTEXT, PRIOR, S.CONDITIONER) and d.call]
    lines.append(f"flow: {sequence(steps)}")
    nets = {f"{d.op}" for d in data if d.role == S.CONDITIONER}
    if nets:
        lines.append("nets: " + ", ".join(sorted(nets)))
    lines.append(f"{len(steps)} steps \u00b7 {params:,} params \u00b7 {num(macs)} MACs")
    name = data[0].unit if data else chain
    return Side(kind="q", title=f"{name}  ({data[0].group if data else ''} group)", lines=lines,
                arrow=f"sample\n{shape_text(sample_shape)}", into_main=True)


def _sides(g, nodes: list[str]) -> list[Side]:
    """q-networks feeding these steps, and the priors their drops hand dims to."""
    out = []
    for n in nodes:
        for src, e in S.in_edges(g, n, S.SAMPLE):
            out.append(_qside(g, S.node(g, src).chain, e.shape))
        for dst, e in S.out_edges(g, n, S.DATA):
            if e.port == S.DROPPED:
                d = S.node(g, dst)
                out.append(Side(kind="prior", title=f"prior: {d.op}", lines=[f"scores {d.dims:,} dropped dims"],
                                arrow=f"{d.dims:,} dims", into_main=False))
    return out


def _badge(g, nodes: list[str]) -> str:
    added = sum(S.node(g, n).added for n in nodes if S.node(g, n).role == AUGMENT)
    dropped = sum(S.node(g, n).dropped for n in nodes if S.node(g, n).role == DROP)
    parts = ([f"+{added:,} dims"] if added else []) + ([f"\u2212{dropped:,} dims to a prior"] if dropped else [])
    return "  ".join(parts)


def _kind(g, nodes: list[str]) -> str:
    roles = {S.node(g, n).role for n in nodes}
    for role, kind in ((DEQUANTIZER, "dequantizer"), (DROP, "drop"), (AUGMENT, "augment"), (PRIOR, "prior")):
        if role in roles:
            return kind
    first, last = S.node(g, nodes[0]), S.node(g, nodes[-1])
    return "reshape" if tuple(first.shape_in) != tuple(last.shape_out) else "flow"


def _unit_box(g, u: _Unit) -> Box:
    """A box for one unit outside a block: the dequantizer, the input augment point, a stage, the prior."""
    first, last = S.node(g, u.nodes[0]), S.node(g, u.nodes[-1])
    kind = _kind(g, u.nodes)
    head = first.op
    title = u.name if u.name.endswith(f": {head}") else f"{u.name}: {head}"
    lines = []
    if len(u.nodes) > 1:
        lines.append("then: " + sequence([S.node(g, n).call for n in u.nodes[1:] if S.node(g, n).call]))
    if kind == "prior":
        lines.append(f"scores {math.prod(first.shape_in):,} dims ({shape_text(first.shape_in)})")
    elif tuple(first.shape_in) != tuple(last.shape_out):
        lines.append(f"{shape_text(first.shape_in)} \u2192 {shape_text(last.shape_out)}")
    nets = _nets(g, u.nodes)
    if nets:
        lines.append(nets)
    params, macs = _params(g, u.name)
    if params or macs:
        lines.append(_cost(params, macs))
    return Box(kind=kind, title=title, lines=lines, badge=_badge(g, u.nodes), sides=_sides(g, u.nodes),
               shape_after=tensor(last.shape_out))


def _run_box(g, run: list[tuple[int, _Unit]]) -> Box:
    """Consecutive plain stages of one shape as one box."""
    nodes = [n for _, u in run for n in u.nodes]
    first, last = run[0][0] + 1, run[-1][0] + 1
    title = f"stage {first}" if first == last else f"stages {first}\u2013{last}"
    shape = S.node(g, nodes[0]).shape_in
    params = macs = 0
    for _, u in run:
        p, m = _params(g, u.name)
        params, macs = params + p, macs + m
    lines = [sequence([S.node(g, n).call for n in nodes]), f"at {shape_text(shape)}"]
    nets = _nets(g, nodes)
    if nets:
        lines[-1] += f" \u00b7 {nets}"
    lines.append(f"{len(nodes)} ops \u00b7 {_cost(params, macs)}")
    return Box(kind="flow", title=title, lines=lines, sides=_sides(g, nodes),
               shape_after=tensor(S.node(g, nodes[-1]).shape_out))


def _block_box(g, call, index: int, units: list[_Unit]) -> Box:
    a = call.args
    aug = getattr(a, "augment", None)
    nodes = [n for u in units for n in u.nodes]
    shape_in = S.node(g, nodes[0]).shape_in
    lines = [f"{'each unit' if a.units > 1 else 'modules'}: {sequence(list(a.modules))}"]
    if aug is not None:
        lines.append(f"between units: {aug.op} (adds dims read off the earlier unit outputs)")
    nets = _nets(g, nodes)
    params = macs = 0
    for u in units:
        p, m = _params(g, u.name)
        params, macs = params + p, macs + m
    lines.append(f"in {shape_text(shape_in)}" + (f" \u00b7 {nets}" if nets else ""))
    lines.append(f"{len(nodes)} ops \u00b7 {_cost(params, macs)}")
    cells = []
    for k, u in enumerate(units):
        p, _ = _params(g, u.name)
        out = S.node(g, u.nodes[-1]).shape_out
        cells.append(Cell(title=f"unit {k + 1}", lines=[shape_text(out), f"{short(p)} params"],
                          badge=_badge(g, u.nodes)))
    if len(cells) == 1:  # the block is its unit
        cells = []
    if len(cells) > MAX_CELLS:  # two rows: the first units, one cell for the middle ones, the last units
        head, tail = CELLS_PER_ROW, CELLS_PER_ROW - 1
        hidden = len(cells) - head - tail
        mid = Cell(title=f"units {head + 1}\u2013{head + hidden}", lines=[f"{hidden} more units", "\u22ef"])
        cells = cells[:head] + [mid] + cells[-tail:]
    n_units = len(units)
    title = f"stage {index + 1}: block of {n_units} unit{'s' if n_units > 1 else ''}"
    return Box(kind="grid", title=title, lines=lines, badge=_badge(g, nodes), cells=cells, sides=_sides(g, nodes),
               shape_after=tensor(S.node(g, nodes[-1]).shape_out))


def layout(spec, g, report) -> Picture:
    """The picture of a complete graph, as data (boxes, sides, cells, footer)."""
    from ...graph.builder import step_path

    units: list[_Unit] = []
    for n in step_path(g, S.INPUT):
        unit = S.node(g, n).unit
        if units and units[-1].name == unit:
            units[-1].nodes.append(n)
        else:
            units.append(_Unit(unit, [n]))
    counts = [call.args.units if call.definition.role == COMPOSITE else 1 for call in spec.stages]
    n_stage = sum(counts)
    pre, stages, post = units[:len(units) - n_stage - 1], units[len(units) - n_stage - 1:-1], units[-1:]
    shape = S.graph_info(g).data_shape
    bits = S.graph_info(g).bits
    data_lines = [f"{math.prod(shape):,} dims" + (f", {bits}-bit integers" if bits else ", continuous")]
    if getattr(spec.data, "dataset", None):
        data_lines.append(f"dataset: {spec.data.dataset}")
    boxes = [Box(kind="data", title=f"data x  {shape_text(shape)}", lines=data_lines, shape_after=tensor(shape),
                 sides=[_condition_side(spec, g)] if spec.condition is not None else [])]
    boxes += [_unit_box(g, u) for u in pre]
    i = 0
    run: list[tuple[int, _Unit]] = []

    def flush():
        if run:
            boxes.append(_run_box(g, list(run)))
            run.clear()

    for index, (call, k) in enumerate(zip(spec.stages, counts)):
        group = stages[i:i + k]
        i += k
        if call.definition.role == COMPOSITE:
            flush()
            boxes.append(_block_box(g, call, index, group))
            continue
        u = group[0]
        if _kind(g, u.nodes) == "flow":
            if run and tuple(S.node(g, run[-1][1].nodes[-1]).shape_out) != tuple(S.node(g, u.nodes[0]).shape_in):
                flush()
            run.append((index, u))
            continue
        flush()
        box = _unit_box(g, u)
        box.title = f"stage {index + 1}: {S.node(g, u.nodes[0]).op}"
        boxes.append(box)
    flush()
    boxes += [_unit_box(g, u) for u in post]
    boxes[-1].shape_after = ""
    p, d = report.parameters, report.dims
    footer = [f"parameters {p.total:,} = flow {p.flow:,} + q {p.q:,} + dequantizer {p.dequantizer:,}"
              + (f" + condition {p.condition:,}" if spec.condition is not None else ""),
              f"MACs per example {num(report.macs)} ({report.macs:,})",
              f"dims: data {d.data:,} + augmented {d.augmented:,} = {d.data + d.augmented:,}"
              f" = scored by priors {d.prior:,}"]
    return Picture(title=spec.name, subtitle=f"{spec.file}  \u00b7  augflow-dsl draw", boxes=boxes, footer=footer)

