"""The picture of an architecture, as data (boxes, the boxes beside them, a block's unit cells, the
footer), and the text helpers that word it: shapes, counts, op sequences compressed into repeats."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ...ops.shapes import fmt_count

MAX_CELLS = 18        # a block with more units shows two rows: its first and last units
CELLS_PER_ROW = 6
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
def shape_text(s) -> str:
    return "\u00d7".join(str(v) for v in s)


num = fmt_count  # MACs and parameters in pictures as in check's tables


def short(n: int) -> str:
    """Three significant digits: 7.86 M, 17.9 M, 6.35 k (a unit's cell is narrow)."""
    for scale, unit in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return str(n)


def tensor(shape) -> str:
    return f"{math.prod(shape):,} dims" if len(shape) == 1 else f"{shape_text(shape)}  ({math.prod(shape):,} dims)"


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

