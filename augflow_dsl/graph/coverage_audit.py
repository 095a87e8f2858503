"""The coverage audit: every element of a scale is transformed conditioned on other elements.

A *scale* is a stretch of the model's data path made of shape-keeping bijections only: it ends
at every op that changes the shape (squeeze, unsqueeze), drops (factor_out), augments or scores
(a prior), so it is a scale between squeezes / drops, or the whole flow when there is none. The
dequantizer's ``then:`` ops (the data's fixed preprocessing, e.g. RealNVP's logit) belong to no
scale.

Within a scale the audit keeps one flag per element: "depends on more than one element of the
scale's input" (a nonzero off-diagonal entry in its row of the scale's Jacobian, structurally).
Each op updates the flags from what its registry definition declares, not from its name:

* ``moves`` (a permutation, e.g. swap): the flags move with the elements;
* ``mixes`` (e.g. conv1x1, every channel at a position): the region's elements are flagged;
* a step with conditioner nets (graph: its PARAMS edges) whose nets read a non-empty region (the
  ``Read`` regions on their CONDITION edges): the elements outside its ``unchanged`` region are
  transformed as functions of the read elements, which lie inside ``unchanged`` (the
  ``conditioner-reads`` property), so they are flagged; an op with nets and no unchanged region
  transforms every element conditioned on what its nets read, and flags them all;
* anything else (actnorm, shift, sigmoid, logit, ...) maps each element by itself: flags stay.

An element still unflagged at the end of its scale reaches the next scale (or a density) as a
function of itself alone: the flow's couplings never see it transformed. RealNVP with one
checkerboard mask repeated leaves the 1,536 squares with i + j even of 3x32x32 to actnorm only.

Severity: a warning, not an error. The log-likelihood stays an exact change of variables (every
op is still a bijection with its own log-det), so nothing the other properties protect is wrong;
the defect is one of modelling power, and a deliberate design may have it (an elementwise
baseline, a test of one op). ``check`` prints the warning at the scale's last op and leaves
``coverage`` out of the proved list. Pure Python, no torch.
"""
from __future__ import annotations

from functools import lru_cache
from operator import itemgetter

import networkx as nx

from ..ops.registry import BIJECTION, get
from ..ops.regions import Read, Region
from ..ops.shapes import fmt, numel
from . import schema as S
from .findings import Finding, Property

PROPERTY = Property(
    "coverage", "every element of a scale (shape-keeping bijections between squeezes, drops and augment points, "
    "or the whole flow) is transformed conditioned on other elements: by a coupling, or mixed by a 1x1 conv; "
    "a warning, not an error: an untouched element costs modelling power, not the likelihood's correctness",
    "one flag per element of each scale, set by the op's declared regions: a step with nets flags what its "
    "`unchanged` region leaves out when its nets read a non-empty region (the Read on their condition edges), "
    "`mixes` flags its region (conv1x1), `moves` permutes the flags (swap); unflagged elements at the scale's "
    "end are reported at its last op (graph/coverage_audit.py)",
    short="every element of every scale is transformed conditioned on others")


@lru_cache(maxsize=256)
def _inside(region: Region, shape: tuple[int, ...]) -> tuple[bool, ...]:
    return tuple(region.contains(shape))


def scales(g: nx.DiGraph, chain: list[str]) -> list[tuple[list[str], str]]:
    """(the nodes of each scale, the label of what ends it) along the model's chain."""
    pre = S.node(g, S.DEQUANTIZE_ID).unit if S.DEQUANTIZE_ID in g else None
    out, cur = [], []
    for n in chain:
        d = S.node(g, n)
        if d.role == BIJECTION and tuple(d.shape_in) == tuple(d.shape_out) and d.unit != pre:
            cur.append(n)
            continue
        if cur:
            out.append((cur, d.label))
        cur = []
    if cur:
        out.append((cur, "the end of the flow"))
    return out


def _conditioned(g: nx.DiGraph, n: str) -> bool:
    """Does step ``n`` have a net that reads a non-empty region of its input?"""
    for u, _ in S.nets_of(g, n):
        for _, e in S.in_edges(g, u, S.CONDITION):
            if not isinstance(e.part, Read) or not e.part.region.empty():
                return True
    return False


def element_flags(g: nx.DiGraph, scale: list[str]) -> tuple[list[bool], list[str]]:
    """Per element of the scale's output: is it a function of more than one input element? And the
    ops that touched elements by themselves only. A flag once set stays set (no op undoes a
    dependence, and a permutation of all-set flags is all set), so a scale stops at all-set."""
    shape = tuple(S.node(g, scale[0]).shape_in)
    flags = [False] * numel(shape)
    alone: list[str] = []
    for n in scale:
        d = S.node(g, n)
        op, a = get(d.op), (d.call.args if d.call is not None else None)
        perm = _moves(op, a, shape) if a is not None else None
        mixed = op.mixes(a, shape) if a is not None else None
        if perm is not None:
            flags = list(itemgetter(*perm)(flags)) if len(perm) > 1 else [flags[perm[0]]]
        if mixed is not None:
            flags = [f or m for f, m in zip(flags, _inside(mixed, shape))]
        if a is not None and _conditioned(g, n):
            keep = op.unchanged(a, shape)
            if keep is None:
                flags = [True] * len(flags)
            else:
                flags = [f or not k for f, k in zip(flags, _inside(keep, shape))]
        elif perm is None and mixed is None and d.op not in alone:
            alone.append(d.op)
        if all(flags):
            break
    return flags, alone


_MOVES: dict[tuple, tuple[int, ...] | None] = {}


def _moves(op, a, shape) -> tuple[int, ...] | None:
    """``op.moves``, computed once per op, arguments and shape (DenseFlow has 74 swaps of 4 shapes)."""
    key = (op.name, repr(a), shape)
    if key not in _MOVES:
        if len(_MOVES) > 256:
            _MOVES.clear()
        perm = op.moves(a, shape)
        _MOVES[key] = tuple(perm) if perm is not None else None
    return _MOVES[key]


def describe(untouched: list[int], shape: tuple[int, ...]) -> str:
    """The untouched elements in words: a region when they form one, else a count and examples."""
    n, plane = len(untouched), numel(shape[1:])
    channels = sorted({k // plane for k in untouched})
    lo, hi = channels[0], channels[-1] + 1
    wanted = set(untouched)
    if hi - lo == len(channels):
        for positions in (("all", "even_columns", "odd_columns", "checker_even", "checker_odd")
                          if len(shape) == 3 else ("all",)):
            region = Region((lo, hi), positions)
            if {k for k, inside in enumerate(_inside(region, shape)) if inside} == wanted:
                where = str(region) if len(shape) == 3 else \
                    (f"feature {lo}" if hi - lo == 1 else f"features {lo}..{hi - 1}")
                return f"the {_elements(n)} of {fmt(shape)} in {where}"
    w = shape[2] if len(shape) == 3 else 1
    some = ", ".join(str((k // plane, k % plane // w, k % w) if len(shape) == 3 else (k,)) for k in untouched[:3])
    return f"{_elements(n)} of the {numel(shape):,} of {fmt(shape)} (e.g. {some})"


def _elements(n: int) -> str:
    return "1 element" if n == 1 else f"{n:,} elements"


def coverage(g: nx.DiGraph, chain: list[str]) -> tuple[list[Finding], str]:
    """Warnings for the scales of the model's chain that leave elements untouched, and what was covered."""
    found: list[Finding] = []
    found_scales = scales(g, chain)
    for scale, end in found_scales:
        flags, alone = element_flags(g, scale)
        untouched = [k for k, f in enumerate(flags) if not f]
        if not untouched:
            continue
        first, last = S.node(g, scale[0]), S.node(g, scale[-1])
        by = f"; the elementwise layers ({', '.join(alone)}) keep each a function of itself" if alone else ""
        found.append(Finding(PROPERTY.id, last.label, (
            f"{describe(untouched, tuple(first.shape_in))} {'passes' if len(untouched) == 1 else 'pass'} this scale "
            f"({first.label} .. {last.label}, up to {end}) as functions of themselves alone: no op of the scale "
            f"transforms them conditioned on other elements{by}; to fix: alternate the masks (`parity: odd` on every "
            "other checkerboard coupling; a swap, reverse or conv1x1 between couplings that share a split), or add a "
            "coupling that transforms them"),
            kind="warning"))
    covered = sum(numel(S.node(g, s[0]).shape_in) for s, _ in found_scales)
    return found, f"{len(found_scales)} scale{'s' if len(found_scales) != 1 else ''}, {covered:,} elements"


__all__ = ["PROPERTY", "coverage", "describe", "element_flags", "scales"]
