"""``augflow-dsl draw SPEC --out arch.svg|png|pdf``: a picture of the architecture that a person
reads at a glance, drawn with matplotlib from the graph (no torch).

Design (issue 13, part 4):

* **One column, data at the top, latent at the bottom** (the normalizing direction): the data box
  (shape, bits, dims), the dequantizer, the input augment point, every stage in order, the prior,
  and a totals footer (parameters by group, MACs, ``data + augmented = scored by priors``). The
  arrow between two boxes carries the tensor's shape and its dims.
* **Beside a box** (a second column): each q-network next to the step it feeds (its context net,
  base, flow steps compressed as ``4 x step (actnorm . conv1x1 ...)``, ops, parameters, MACs);
  each drop's prior with the dims handed to it.
* **Stages:** a run of consecutive plain stages of one shape (VFlow's and Flow++'s step lists) is
  one box with its steps compressed into repeats; a stage that changes the shape or drops dims
  stands alone; a block (a composite stage) is one box holding a grid of its units, each unit a
  small box with its output shape, the dims its augment point adds and its parameters (more than
  :data:`MAX_CELLS` units: the first and last rows, the middle summarised in one cell).
* Colours follow the node roles of the registry (dequantizer, augment, drop, prior, q-network);
  nothing here is keyed on an op's name.
* **Readable by construction, and checked:** fonts are at least 7 pt at 100 %; after layout every
  text is measured with the Agg renderer and shrunk (never below :data:`MIN_FONT`) until it fits
  its box; :func:`layout_problems` lists any text still outside its box or overlapping another
  (the tests demand none for every spec).
* **Formats** from the extension of ``--out``: ``.svg`` (text kept as text, one ``<text>`` element
  per line), ``.png`` (150 dpi), ``.pdf``; anything else is refused (exit 2). Output is
  deterministic: fixed ``svg.hashsalt``, no dates in the metadata, the creator set to augflow-dsl.
* **Exit codes:** 0 written; 1 the spec does not load or its graph stops at a shape error (nothing
  drawn), or it builds but fails the audit (drawn, errors printed: the picture helps find them);
  2 usage (missing file, unsupported extension, matplotlib missing).
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..ops.registry import AUGMENT, COMPOSITE, CONTEXT, DEQUANTIZER, DROP, PRIOR

FORMATS = (".svg", ".png", ".pdf")
MAX_CELLS = 18        # a block with more units shows two rows: its first and last units
CELLS_PER_ROW = 6
MIN_FONT = 6.0
MAX_PERIOD = 32       # the longest repeated op sequence looked for (keeps compress linear in practice)


# ---------------------------------------------------------------------------------- the picture, as data
@dataclass
class Cell:
    """One unit of a block."""

    title: str
    lines: list[str]
    badge: str = ""


@dataclass
class Side:
    """A box beside a main box: a q-network or a drop's prior."""

    kind: str
    title: str
    lines: list[str]
    arrow: str            # the label of the arrow between the two boxes: above it, then (after "\n") below it
    into_main: bool       # True: the arrow points at the main box (a q-network's sample)


@dataclass
class Box:
    kind: str             # style: data, dequantizer, augment, flow, reshape, drop, prior, grid (a block)
    title: str
    lines: list[str]
    badge: str = ""       # "+3,072 dims" / "-7,936 dims"
    cells: list[Cell] = field(default_factory=list)
    sides: list[Side] = field(default_factory=list)
    shape_after: str = ""  # the tensor it hands on, for the arrow below it


@dataclass
class Picture:
    title: str
    subtitle: str
    boxes: list[Box]
    footer: list[str]


# ---------------------------------------------------------------------------------- text helpers
def _shape(s) -> str:
    return "\u00d7".join(str(v) for v in s)


def _num(n: int) -> str:
    if n >= 10**9:
        return f"{n / 1e9:.2f} G"
    if n >= 10**6:
        return f"{n / 1e6:.2f} M"
    return f"{n:,}"


def _short(n: int) -> str:
    """Three significant digits: 7.86 M, 17.9 M, 6.35 k (a unit's cell is narrow)."""
    for scale, unit in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return str(n)


def _tensor(shape) -> str:
    return f"{math.prod(shape):,} dims" if len(shape) == 1 else f"{_shape(shape)}  ({math.prod(shape):,} dims)"


def compress(items: list[str]) -> list[tuple[int, list[str]]]:
    """Run-length encode a sequence by its longest repeats: [a b a b c] -> [(2, [a b]), (1, [c])]."""
    out: list[tuple[int, list[str]]] = []
    i, n = 0, len(items)
    while i < n:
        best = (1, 1)  # (period, repeats)
        for p in range(1, min((n - i) // 2, MAX_PERIOD) + 1):
            r = 1
            while items[i + r * p:i + (r + 1) * p] == items[i:i + p]:
                r += 1
            if r > 1 and p * r > best[0] * best[1]:
                best = (p, r)
        p, r = best
        if r == 1 and out and out[-1][0] == 1:
            out[-1][1].append(items[i])
        else:
            out.append((r, items[i:i + p]))
        i += p * r
    return out


def _module(calls) -> str:
    """The module name shared by ``calls`` (their ``origin``, "module NAME"), else ''."""
    origins = {getattr(c, "origin", "") for c in calls}
    if len(origins) == 1:
        origin = origins.pop() or ""
        kind, _, name = origin.partition(" ")
        return name if kind == "module" and name else ""
    return ""


def sequence(calls) -> str:
    """Op calls as a compressed sequence: '4 x step (actnorm . conv1x1 . mixture_coupling . swap) . sigmoid'."""
    names = [c.op for c in calls]
    parts, i = [], 0
    for r, seq in compress(names):
        chunk = calls[i:i + r * len(seq)]
        i += r * len(seq)
        inner = " \u00b7 ".join(seq)
        if r == 1:
            parts.append(inner)
            continue
        mod = _module(chunk)
        inner = f"({inner})" if len(seq) > 1 else inner
        parts.append(f"{r} \u00d7 {mod} {inner}" if mod else f"{r} \u00d7 {inner}")
    return " \u00b7 ".join(parts)


# ---------------------------------------------------------------------------------- graph -> picture
@dataclass
class _Unit:
    name: str
    nodes: list[str]                 # its steps on the model chain, in order


def _params(g, unit: str, chain: str = "p") -> tuple[int, int]:
    ps = ms = 0
    for _, d in g.nodes(data=True):
        if d.get("chain") == chain and d["unit"] == unit:
            ps += d["params"]
            ms += d["macs"]
    return ps, ms


def _cost(params: int, macs: int) -> str:
    return f"{params:,} params \u00b7 {_num(macs)} MACs" if params or macs else "no parameters"


def _nets(g, nodes: list[str]) -> str:
    """The conditioner nets the steps own, by slot: 'net: conv_attention'."""
    from ..graph.builder import CONDITIONER

    seen: dict[str, None] = {}
    for n in nodes:
        for kid in g.predecessors(n):
            d = g.nodes[kid]
            if d["role"] == CONDITIONER and d.get("owner") == n:
                seen.setdefault(f"{d.get('slot', 'net')}: {d['op']}")
    return ", ".join(seen)


def _qside(g, chain: str, sample_shape) -> Side:
    from ..graph.builder import CONDITIONER

    nodes = sorted((n for n, d in g.nodes(data=True) if d.get("chain") == chain), key=lambda n: g.nodes[n]["order"])
    data = [g.nodes[n] for n in nodes]
    params = sum(d["params"] for d in data)
    macs = sum(d["macs"] for d in data)
    lines = []
    ctx = next((d for d in data if d["role"] == CONTEXT), None)
    if ctx is not None:
        lines.append(f"context: {ctx['op']} \u2192 {_shape(ctx['shape_out'])}")
    base = next((d for d in data if d["role"] == PRIOR), None)
    if base is not None:
        lines.append(f"base: {base['op']} {_shape(base['shape_out'])}")
    steps = [d["call"] for d in data if d["role"] not in (CONTEXT, PRIOR, CONDITIONER) and d.get("call")]
    lines.append(f"flow: {sequence(steps)}")
    nets = {f"{d['op']}" for d in data if d["role"] == CONDITIONER}
    if nets:
        lines.append("nets: " + ", ".join(sorted(nets)))
    lines.append(f"{len(steps)} steps \u00b7 {params:,} params \u00b7 {_num(macs)} MACs")
    name = data[0]["unit"] if data else chain
    return Side(kind="q", title=f"{name}  ({data[0]['group'] if data else ''} group)", lines=lines,
                arrow=f"sample\n{_shape(sample_shape)}", into_main=True)


def _sides(g, nodes: list[str]) -> list[Side]:
    """q-networks feeding these steps, and the priors their drops hand dims to."""
    out = []
    for n in nodes:
        for src, _, e in g.in_edges(n, data=True):
            if e["kind"] == "sample":
                out.append(_qside(g, g.nodes[src]["chain"], e["shape"]))
        for _, dst, e in g.out_edges(n, data=True):
            if e["kind"] == "data" and e.get("port") == "dropped":
                d = g.nodes[dst]
                out.append(Side(kind="prior", title=f"prior: {d['op']}", lines=[f"scores {d['dims']:,} dropped dims"],
                                arrow=f"{d['dims']:,} dims", into_main=False))
    return out


def _badge(g, nodes: list[str]) -> str:
    added = sum(g.nodes[n].get("added", 0) for n in nodes if g.nodes[n]["role"] == AUGMENT)
    dropped = sum(g.nodes[n].get("dropped", 0) for n in nodes if g.nodes[n]["role"] == DROP)
    parts = ([f"+{added:,} dims"] if added else []) + ([f"\u2212{dropped:,} dims to a prior"] if dropped else [])
    return "  ".join(parts)


def _kind(g, nodes: list[str]) -> str:
    roles = {g.nodes[n]["role"] for n in nodes}
    for role, kind in ((DEQUANTIZER, "dequantizer"), (DROP, "drop"), (AUGMENT, "augment"), (PRIOR, "prior")):
        if role in roles:
            return kind
    first, last = g.nodes[nodes[0]], g.nodes[nodes[-1]]
    return "reshape" if tuple(first["shape_in"]) != tuple(last["shape_out"]) else "flow"


def _unit_box(g, u: _Unit) -> Box:
    """A box for one unit outside a block: the dequantizer, the input augment point, a stage, the prior."""
    first, last = g.nodes[u.nodes[0]], g.nodes[u.nodes[-1]]
    kind = _kind(g, u.nodes)
    head = first["op"]
    title = u.name if u.name.endswith(f": {head}") else f"{u.name}: {head}"
    lines = []
    if len(u.nodes) > 1:
        lines.append("then: " + sequence([g.nodes[n]["call"] for n in u.nodes[1:] if g.nodes[n].get("call")]))
    if kind == "prior":
        lines.append(f"scores {math.prod(first['shape_in']):,} dims ({_shape(first['shape_in'])})")
    elif tuple(first["shape_in"]) != tuple(last["shape_out"]):
        lines.append(f"{_shape(first['shape_in'])} \u2192 {_shape(last['shape_out'])}")
    nets = _nets(g, u.nodes)
    if nets:
        lines.append(nets)
    params, macs = _params(g, u.name)
    if params or macs:
        lines.append(_cost(params, macs))
    return Box(kind=kind, title=title, lines=lines, badge=_badge(g, u.nodes), sides=_sides(g, u.nodes),
               shape_after=_tensor(last["shape_out"]))


def _run_box(g, run: list[tuple[int, _Unit]]) -> Box:
    """Consecutive plain stages of one shape as one box."""
    nodes = [n for _, u in run for n in u.nodes]
    first, last = run[0][0] + 1, run[-1][0] + 1
    title = f"stage {first}" if first == last else f"stages {first}\u2013{last}"
    shape = g.nodes[nodes[0]]["shape_in"]
    params = macs = 0
    for _, u in run:
        p, m = _params(g, u.name)
        params, macs = params + p, macs + m
    lines = [sequence([g.nodes[n]["call"] for n in nodes]), f"at {_shape(shape)}"]
    nets = _nets(g, nodes)
    if nets:
        lines[-1] += f" \u00b7 {nets}"
    lines.append(f"{len(nodes)} ops \u00b7 {_cost(params, macs)}")
    return Box(kind="flow", title=title, lines=lines, sides=_sides(g, nodes),
               shape_after=_tensor(g.nodes[nodes[-1]]["shape_out"]))


def _block_box(g, call, index: int, units: list[_Unit]) -> Box:
    a = call.args
    aug = getattr(a, "augment", None)
    nodes = [n for u in units for n in u.nodes]
    shape_in = g.nodes[nodes[0]]["shape_in"]
    lines = [f"{'each unit' if a.units > 1 else 'modules'}: {sequence(list(a.modules))}"]
    if aug is not None:
        lines.append(f"between units: {aug.op} (adds dims read off the earlier unit outputs)")
    nets = _nets(g, nodes)
    params = macs = 0
    for u in units:
        p, m = _params(g, u.name)
        params, macs = params + p, macs + m
    lines.append(f"in {_shape(shape_in)}" + (f" \u00b7 {nets}" if nets else ""))
    lines.append(f"{len(nodes)} ops \u00b7 {_cost(params, macs)}")
    cells = []
    for k, u in enumerate(units):
        p, _ = _params(g, u.name)
        out = g.nodes[u.nodes[-1]]["shape_out"]
        cells.append(Cell(title=f"unit {k + 1}", lines=[_shape(out), f"{_short(p)} params"], badge=_badge(g, u.nodes)))
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
               shape_after=_tensor(g.nodes[nodes[-1]]["shape_out"]))


def plan(spec, g, report) -> Picture:
    """The picture of a complete graph, as data (boxes, sides, cells, footer)."""
    from ..graph.builder import INPUT, step_path

    units: list[_Unit] = []
    for n in step_path(g, INPUT):
        unit = g.nodes[n]["unit"]
        if units and units[-1].name == unit:
            units[-1].nodes.append(n)
        else:
            units.append(_Unit(unit, [n]))
    counts = [call.args.units if call.definition.role == COMPOSITE else 1 for call in spec.stages]
    n_stage = sum(counts)
    pre, stages, post = units[:len(units) - n_stage - 1], units[len(units) - n_stage - 1:-1], units[-1:]
    shape = g.graph["data_shape"]
    bits = g.graph.get("bits")
    data_lines = [f"{math.prod(shape):,} dims" + (f", {bits}-bit integers" if bits else ", continuous")]
    if getattr(spec.data, "dataset", None):
        data_lines.append(f"dataset: {spec.data.dataset}")
    boxes = [Box(kind="data", title=f"data x  {_shape(shape)}", lines=data_lines, shape_after=_tensor(shape))]
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
            if run and tuple(g.nodes[run[-1][1].nodes[-1]]["shape_out"]) != tuple(g.nodes[u.nodes[0]]["shape_in"]):
                flush()
            run.append((index, u))
            continue
        flush()
        box = _unit_box(g, u)
        box.title = f"stage {index + 1}: {g.nodes[u.nodes[0]]['op']}"
        boxes.append(box)
    flush()
    boxes += [_unit_box(g, u) for u in post]
    boxes[-1].shape_after = ""
    p, d = report.parameters, report.dims
    footer = [f"parameters {p.total:,} = flow {p.flow:,} + q {p.q:,} + dequantizer {p.dequantizer:,}",
              f"MACs per example {_num(report.macs)} ({report.macs:,})",
              f"dims: data {d.data:,} + augmented {d.augmented:,} = {d.data + d.augmented:,}"
              f" = scored by priors {d.prior:,}"]
    return Picture(title=spec.name, subtitle=f"{spec.file}  \u00b7  augflow-dsl draw", boxes=boxes, footer=footer)


# ---------------------------------------------------------------------------------- picture -> matplotlib
STYLE = {  # kind -> (fill, edge)
    "data": ("#f0f0f0", "#555555"), "dequantizer": ("#ece4f7", "#6a4c93"), "augment": ("#dff3e4", "#2d7a46"),
    "flow": ("#e3eefb", "#2f5f98"), "reshape": ("#f4f4f4", "#777777"), "grid": ("#e3eefb", "#2f5f98"),
    "drop": ("#fde9d9", "#c0622b"), "prior": ("#f6eedd", "#8a6d3b"), "q": ("#fff6d5", "#a88400"),
    "cell": ("#ffffff", "#2f5f98"), "footer": ("#ffffff", "#555555"),
}
LEGEND = (("dequantizer", "dequantizer"), ("augment", "augment point"), ("flow", "flow steps"),
          ("drop", "drop (factor-out)"), ("prior", "prior"), ("q", "q-network"))
BADGE = {"augment": "#2d7a46", "drop": "#c0622b", "grid": "#2d7a46", "cell": "#2d7a46"}

MARGIN, W_MAIN, GAP, W_SIDE = 0.3, 6.2, 0.95, 3.4
PAD = 0.1
FS_TITLE, FS_BODY, FS_SMALL = 10.0, 8.5, 7.5
ROW_GAP = 0.46
SIDE_GAP = 0.12
CELL_H_GAP, CELL_V_GAP = 0.12, 0.1
DPI = 100


def _lh(fs: float) -> float:
    """Line height in inches for a font size in points."""
    return fs * 1.45 / 72


def _wrap(lines: list[str], width_in: float, fs: float) -> list[str]:
    chars = max(int(width_in * 72 / (fs * 0.6)), 10)
    out = []
    for line in lines:
        out += textwrap.wrap(line, chars, subsequent_indent="   ", break_on_hyphens=False) or [""]
    return out


@dataclass
class Drawing:
    """A rendered picture: the matplotlib figure and every text with the rectangle (inches, y down)
    it must stay inside."""

    figure: Any
    texts: list[tuple[Any, tuple[float, float, float, float]]] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0


class _Canvas:
    def __init__(self, width: float, height: float):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=(width, height), dpi=DPI)
        FigureCanvasAgg(self.fig)
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(height, 0)
        self.ax.set_axis_off()
        self.drawing = Drawing(self.fig, width=width, height=height)

    def box(self, x, y, w, h, kind: str, gid: str = "") -> None:
        from matplotlib.patches import FancyBboxPatch

        fill, edge = STYLE[kind]
        patch = FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.06", facecolor=fill,
                               edgecolor=edge, linewidth=1.1, zorder=1)
        if gid:
            patch.set_gid(gid)
        self.ax.add_patch(patch)

    def text(self, x, y, s: str, within, fs: float = FS_BODY, bold=False, color="#1a1a1a", ha="left",
             va="top") -> Any:
        t = self.ax.text(x, y, s, fontsize=fs, fontweight="bold" if bold else "regular", color=color, ha=ha, va=va,
                         zorder=3, linespacing=1.3)
        self.drawing.texts.append((t, within))
        return t

    def arrow(self, x0, y0, x1, y1) -> None:
        from matplotlib.patches import FancyArrowPatch

        self.ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=11, linewidth=1.1,
                                          color="#555555", zorder=2, shrinkA=0, shrinkB=0))


def _box_height(box: Box, width: float) -> tuple[float, list[str], int]:
    body = _wrap(box.lines, width - 2 * PAD, FS_BODY)
    h = PAD + _lh(FS_TITLE) + len(body) * _lh(FS_BODY) + PAD
    rows = 0
    if box.cells:
        rows = math.ceil(len(box.cells) / CELLS_PER_ROW)
        h += rows * (_cell_height() + CELL_V_GAP)
    return h, body, rows


def _cell_height() -> float:
    return 2 * PAD * 0.6 + _lh(FS_SMALL) * 4


def _side_height(side: Side) -> tuple[float, list[str]]:
    body = _wrap(side.lines, W_SIDE - 2 * PAD, FS_BODY)
    return PAD + _lh(FS_TITLE) + len(body) * _lh(FS_BODY) + PAD, body


def render(pic: Picture) -> Drawing:
    """Lay the picture out and draw it; texts are then fitted to their boxes (:func:`fit`)."""
    has_sides = any(b.sides for b in pic.boxes)
    width = MARGIN + W_MAIN + (GAP + W_SIDE if has_sides else 0) + MARGIN
    header = 0.95
    rows = []
    y = side_free = MARGIN + header
    for b in pic.boxes:  # a side box may reach down beside the next rows while they have no side box
        h, body, _ = _box_height(b, W_MAIN)
        sides = [_side_height(s) for s in b.sides]
        top = max(y, side_free) if sides else y
        rows.append((b, top, h, body, sides))
        if sides:
            side_free = top + sum(s[0] for s in sides) + SIDE_GAP * len(sides) + 0.1
        y = top + h + ROW_GAP
    y = max(y, side_free + ROW_GAP - SIDE_GAP - 0.1)
    footer_body = _wrap(pic.footer, width - 2 * MARGIN - 2 * PAD, FS_BODY + 0.5)
    footer_h = PAD + _lh(FS_TITLE) + len(footer_body) * _lh(FS_BODY + 0.5) + PAD
    height = y + footer_h + MARGIN
    c = _Canvas(width, height)
    # header: title, subtitle, legend
    top = (0, 0, width, MARGIN + header)
    c.text(MARGIN, MARGIN, pic.title, top, fs=15, bold=True)
    c.text(MARGIN, MARGIN + 0.34, pic.subtitle, top, fs=FS_SMALL, color="#555555")
    used = {b.kind for b in pic.boxes} | {s.kind for b in pic.boxes for s in b.sides}
    _legend(c, MARGIN, MARGIN + 0.62, top, used | ({"flow"} if "grid" in used else set()))
    x0 = MARGIN
    for i, (b, top, h, body, sides) in enumerate(rows):
        c.box(x0, top, W_MAIN, h, b.kind, gid=f"box {i}")
        inner = (x0, top, x0 + W_MAIN, top + h)
        c.text(x0 + PAD, top + PAD, b.title, inner, fs=FS_TITLE, bold=True)
        if b.badge:
            c.text(x0 + W_MAIN - PAD, top + PAD, b.badge, inner, fs=FS_TITLE - 0.5, bold=True,
                   color=BADGE.get(b.kind, "#2d7a46"), ha="right")
        ty = top + PAD + _lh(FS_TITLE)
        if body:
            c.text(x0 + PAD, ty, "\n".join(body), inner, fs=FS_BODY)
        ty += len(body) * _lh(FS_BODY)
        if b.cells:
            _cells(c, b.cells, x0 + PAD, ty + CELL_V_GAP * 0.5, W_MAIN - 2 * PAD)
        sy = top
        for s, (sh, sbody) in zip(b.sides, sides):
            sx = x0 + W_MAIN + GAP
            c.box(sx, sy, W_SIDE, sh, s.kind)
            sinner = (sx, sy, sx + W_SIDE, sy + sh)
            c.text(sx + PAD, sy + PAD, s.title, sinner, fs=FS_TITLE, bold=True)
            c.text(sx + PAD, sy + PAD + _lh(FS_TITLE), "\n".join(sbody), sinner, fs=FS_BODY)
            ay = min(sy + min(sh, h) / 2, top + h - 0.15)
            if s.into_main:
                c.arrow(sx, ay, x0 + W_MAIN, ay)
            else:
                c.arrow(x0 + W_MAIN, ay, sx, ay)
            above, _, below = s.arrow.partition("\n")
            mid = (x0 + W_MAIN + sx) / 2
            c.text(mid, ay - 0.04, above, (x0 + W_MAIN, ay - 0.3, sx, ay), fs=FS_SMALL, ha="center", va="bottom",
                   color="#444444")
            if below:
                c.text(mid, ay + 0.04, below, (x0 + W_MAIN, ay, sx, ay + 0.3), fs=FS_SMALL, ha="center", va="top",
                       color="#444444")
            sy += sh + SIDE_GAP
        if i + 1 < len(rows):
            nxt = rows[i + 1][1]
            ax = x0 + 0.5
            c.arrow(ax, top + h, ax, nxt)
            if b.shape_after:
                c.text(ax + 0.14, (top + h + nxt) / 2, b.shape_after, (ax, top + h, x0 + W_MAIN, nxt), fs=FS_SMALL,
                       va="center", color="#444444")
    fy = height - MARGIN - footer_h
    c.box(MARGIN, fy, width - 2 * MARGIN, footer_h, "footer", gid="totals")
    finner = (MARGIN, fy, width - MARGIN, fy + footer_h)
    c.text(MARGIN + PAD, fy + PAD, "totals", finner, fs=FS_TITLE, bold=True)
    c.text(MARGIN + PAD, fy + PAD + _lh(FS_TITLE), "\n".join(footer_body), finner, fs=FS_BODY + 0.5)
    fit(c.drawing)
    return c.drawing


def _legend(c: _Canvas, x: float, y: float, within, kinds: set[str]) -> None:
    from matplotlib.patches import Rectangle

    renderer = c.fig.canvas.get_renderer()
    for kind, label in LEGEND:
        if kind not in kinds:
            continue
        fill, edge = STYLE[kind]
        c.ax.add_patch(Rectangle((x, y + 0.02), 0.16, 0.12, facecolor=fill, edgecolor=edge, linewidth=1.0, zorder=1))
        t = c.text(x + 0.22, y, label, within, fs=FS_SMALL, color="#333333")
        x += 0.22 + t.get_window_extent(renderer).width / DPI + 0.3


def _cells(c: _Canvas, cells: list[Cell], x: float, y: float, width: float) -> None:
    per_row = min(len(cells), CELLS_PER_ROW)
    cw = min((width - (per_row - 1) * CELL_H_GAP) / per_row, 2.2)
    ch = _cell_height()
    for k, cell in enumerate(cells):
        r, col = divmod(k, CELLS_PER_ROW)
        cx, cy = x + col * (cw + CELL_H_GAP), y + r * (ch + CELL_V_GAP)
        c.box(cx, cy, cw, ch, "cell")
        inner = (cx, cy, cx + cw, cy + ch)
        lines = [*cell.lines, cell.badge or ""]
        c.text(cx + PAD * 0.8, cy + PAD * 0.6, cell.title, inner, fs=FS_SMALL + 0.5, bold=True)
        c.text(cx + PAD * 0.8, cy + PAD * 0.6 + _lh(FS_SMALL + 0.5), "\n".join(lines[:-1]), inner, fs=FS_SMALL)
        if cell.badge:
            c.text(cx + PAD * 0.8, cy + PAD * 0.6 + _lh(FS_SMALL + 0.5) + (len(lines) - 1) * _lh(FS_SMALL) * 1.0,
                   cell.badge, inner, fs=FS_SMALL, color=BADGE["cell"])


# ---------------------------------------------------------------------------------- fitting and checking
def _extent(d: Drawing, t, renderer) -> tuple[float, float, float, float]:
    """A text's extent in inches, y down (the layout's coordinates)."""
    bb = t.get_window_extent(renderer)
    return bb.x0 / DPI, d.height - bb.y1 / DPI, bb.x1 / DPI, d.height - bb.y0 / DPI


INSET = 0.035  # inches a text keeps clear of its box's edge


def _inside(e, r, inset: float = INSET) -> bool:
    return e[0] >= r[0] + inset and e[1] >= r[1] + inset and e[2] <= r[2] - inset and e[3] <= r[3] - inset


def fit(d: Drawing) -> None:
    """Shrink each text that overflows its rectangle, in quarter points, down to MIN_FONT."""
    renderer = d.figure.canvas.get_renderer()
    for t, r in d.texts:
        while not _inside(_extent(d, t, renderer), r) and t.get_fontsize() > MIN_FONT:
            t.set_fontsize(t.get_fontsize() - 0.25)


def layout_problems(d: Drawing) -> list[str]:
    """Texts outside their boxes or overlapping another text (an empty list: the picture is clean)."""
    renderer = d.figure.canvas.get_renderer()
    ext = [(t, _extent(d, t, renderer), r) for t, r in d.texts]
    out = [f"{t.get_text()[:40]!r} leaves its box" for t, e, r in ext if not _inside(e, r)]
    for i, (t1, e1, _) in enumerate(ext):
        for t2, e2, _ in ext[i + 1:]:
            if min(e1[2], e2[2]) - max(e1[0], e2[0]) > 0.01 and min(e1[3], e2[3]) - max(e1[1], e2[1]) > 0.01:
                out.append(f"{t1.get_text()[:40]!r} overlaps {t2.get_text()[:40]!r}")
    return out


def save(d: Drawing, out: str | Path) -> Path:
    """Write the drawing; the format is the extension (.svg, .png, .pdf). Deterministic output."""
    import matplotlib

    out = Path(out)
    suffix = out.suffix.lower()
    meta = {".svg": {"Date": None, "Creator": "augflow-dsl draw"},
            ".png": {"Software": "augflow-dsl draw"},
            ".pdf": {"Creator": "augflow-dsl draw", "Producer": "augflow-dsl draw", "CreationDate": None}}[suffix]
    with matplotlib.rc_context({"svg.hashsalt": "augflow-dsl", "svg.fonttype": "none", "pdf.fonttype": 42}):
        d.figure.savefig(out, format=suffix[1:], dpi=150 if suffix == ".png" else DPI, metadata=meta)
    return out


# ---------------------------------------------------------------------------------- API and command
class DrawTrouble(Exception):
    """The spec cannot be drawn; ``code`` is the exit status (1: the spec, 2: usage)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


@dataclass
class DrawResult:
    path: Path | None
    drawing: Drawing | None
    picture: Picture
    report: Any            # graph.check.CheckReport


def draw_spec(spec_path: str | Path, out: str | Path | None = None, overrides: list[str] | None = None) -> DrawResult:
    """Draw ``spec_path`` (under ``overrides``, ``"NAME=VALUE"``) to ``out`` (None: lay out only).
    Raises :class:`DrawTrouble` for a bad extension, a missing file, a spec that does not load or
    whose graph stops at a shape error."""
    from ..errors import Source, SpecError
    from ..graph.builder import build
    from ..graph.check import check_graph
    from ..language.load import load

    if out is not None and Path(out).suffix.lower() not in FORMATS:
        raise DrawTrouble(f"error: cannot write '{out}': the format comes from the extension, one of "
                          f"{', '.join(FORMATS)}", 2)
    if not Path(spec_path).is_file():
        raise DrawTrouble(f"error: no such spec file: {spec_path}", 2)
    try:
        spec = load(spec_path, overrides or [])
    except (SpecError, ValueError) as e:
        raise DrawTrouble(str(e), 1) from None
    g, diag = build(spec)
    if not g.graph.get("complete"):
        msgs = "\n".join(str(e.with_source(Source(spec.text, spec.file))) for e in diag.errors)
        raise DrawTrouble(f"{msgs}\n{spec_path}: the graph stops at this shape error; nothing drawn", 1)
    report = check_graph(spec, g, diag)
    pic = plan(spec, g, report)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise DrawTrouble("error: draw needs matplotlib: python -m pip install matplotlib", 2) from None
    drawing = render(pic)
    path = save(drawing, out) if out is not None else None
    return DrawResult(path=path, drawing=drawing, picture=pic, report=report)


def cmd_draw(args) -> int:
    from rich.console import Console
    from rich.markup import escape

    err, out = Console(stderr=True, highlight=False), Console(highlight=False)
    try:
        result = draw_spec(args.spec, args.out, args.set)
    except DrawTrouble as e:
        err.print(f"[red]{escape(str(e))}[/red]", soft_wrap=True)
        return e.code
    except OSError as e:
        err.print(f"[red]error: cannot write {escape(str(args.out))}: {escape(e.strerror or str(e))}[/red]")
        return 2
    r = result.report
    for e in r.errors:
        err.print(f"[red]{escape(e.get('text') or e.get('message', ''))}[/red]", soft_wrap=True)
    out.print(f"wrote {escape(str(result.path))}: {len(result.picture.boxes)} boxes, "
              f"{r.parameters.total:,} parameters" + ("" if r.valid else f"; the spec fails the audit "
                                                       f"({len(r.errors)} error(s))"), soft_wrap=True)
    return 0 if r.valid else 1


def add_command(sub, common) -> None:
    p = sub.add_parser("draw", help="a picture of the architecture (svg, png or pdf; matplotlib, no torch)",
                       description="Draw the architecture: stages in order, units with their shapes, augment "
                                   "points and drops with their dims, q-networks beside what they feed, totals. "
                                   "Exit status: 0 written, 1 the spec is invalid (drawn only if its graph is "
                                   "complete), 2 usage (missing file, extension not .svg/.png/.pdf).")
    p.add_argument("spec")
    p.add_argument("--out", required=True, help="the picture to write: .svg, .png or .pdf")
    common(p)
    p.set_defaults(func=cmd_draw)
