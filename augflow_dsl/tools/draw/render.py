"""Rendering: a :class:`~.picture.Picture` -> a matplotlib figure (:class:`Drawing`), every text
with the rectangle it must stay inside; texts shrunk to fit (:func:`fit`), checked
(:func:`layout_problems`) and written deterministically (:func:`save`)."""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .picture import CELLS_PER_ROW, Box, Cell, Picture, Side

FORMATS = (".svg", ".png", ".pdf")
MIN_FONT = 6.0

STYLE = {  # kind -> (fill, edge)
    "data": ("#f0f0f0", "#555555"), "dequantizer": ("#ece4f7", "#6a4c93"), "augment": ("#dff3e4", "#2d7a46"),
    "flow": ("#e3eefb", "#2f5f98"), "reshape": ("#f4f4f4", "#777777"), "grid": ("#e3eefb", "#2f5f98"),
    "drop": ("#fde9d9", "#c0622b"), "prior": ("#f6eedd", "#8a6d3b"), "q": ("#fff6d5", "#a88400"),
    "condition": ("#fde8f1", "#a0346b"),
    "cell": ("#ffffff", "#2f5f98"), "footer": ("#ffffff", "#555555"),
}
LEGEND = (("dequantizer", "dequantizer"), ("augment", "augment point"), ("flow", "flow steps"),
          ("drop", "drop (factor-out)"), ("prior", "prior"), ("q", "q-network"),
          ("condition", "condition y"))
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

