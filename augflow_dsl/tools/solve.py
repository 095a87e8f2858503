"""``augflow-dsl solve SPEC --params 20M --vary filters [--vary blocks] [--nearest]`` (issue 13, part 1):
integer values of ``let`` variables that make the analytic parameter count the largest at or under
a budget (with ``--nearest``: the closest to it, on either side). No torch.

Design:

* **Counting.** A point (one value per varied variable) is *counted* by evaluating the spec, parsed
  once, with the point as overrides (plus ``--set``), building its graph and summing the nodes'
  parameters: ``check``'s ``parameters.total`` without the audit. A point that does not evaluate or
  whose graph stops at a shape error (VFlow's D_H not a multiple of its 4 heads) is *invalid* and
  skipped; nothing assumes the count is monotone.
* **Model.** On its valid values the count is a polynomial in each size variable (widths enter
  squared, depths linearly, DenseFlow's units cubed), or one polynomial per parity where a channel
  count is halved (DenseFlow's cross-unit growth). The model is such a quasi-polynomial: per
  variable a degree (1-3) and a period (1 or 2), fitted exactly (rational arithmetic) through every
  count so far; the kinds are tried in order (degree 2 everywhere first, then by number of
  coefficients), the next one whenever a count contradicts the current. A kind needs counts on a
  small grid around the spec's own values (steps of the largest power of two dividing the value,
  which keeps its divisibility). When no kind fits (a count that is piecewise in another way),
  every point of the box is counted (at most ``MAX_SCAN``).
* **Search.** The model predicts every point of the box; points are taken in order of predicted
  merit (largest at or under the budget, or nearest) and counted until one is valid and counted as
  predicted: every point predicted better was counted and is invalid. Before it is taken, the model
  must hold where it was not fitted: the point's neighbours one up in each combination of variables
  (its likeliest rivals, and the other parities) are counted, and its class must hold more counts
  than coefficients, with one value more than the degree on the line through the class's centre
  along each variable. A count that disagrees moves the model and the ranking starts again; "no
  value fits" is likewise said only by a model that held on such extra counts. The point is then
  verified by ``check``'s audit (``check_graph``, what ``augflow-dsl check SPEC --set ...`` runs):
  valid, and exactly that count; a point the audit refuses is skipped and the search goes on.
  The answer is thus exact whenever the count is such a quasi-polynomial on the valid values (every
  spec and variable tried: tests/test_solve.py compares it with a scan of ``check`` over a box).
* **Range.** ``--range NAME=LO:HI`` (inclusive). Default: LO = 1 (the value itself if it is below 1);
  HI = max(2 v, 8) for the spec's value v, stretched to the largest value up to ``DEFAULT_CAP`` at
  which the model predicts at most the budget (the other variables at their values; one more with
  ``--nearest``): the box reaches past the budget however weakly the count grows, and past a dip
  of a count that rises and falls. A box of more than ``MAX_BOX`` points is refused (narrow it).
* **Ties** (equal counts): the point closest to the spec's values (sum of |v - v0|), then the
  smaller; with ``--nearest``, a count at or under the budget before one equally far above it.
* **Budgets**: a whole number (``130647294``, ``31,443,440``) or SI units: k = 10^3, M = 10^6,
  G = 10^9 (``20M``, ``19.2M``, ``1.5G``); not 2^20 (the VFlow paper's "37.8M" is in 2^20 units).
* **Exit codes**: 0 solved; 1 the spec does not load (with its own values and ``--set``), a varied
  name is not an integer variable of it, or no value fits; 2 usage (a malformed budget or range, a
  missing file, a name both varied and ``--set``, a box over ``MAX_BOX`` points).
"""
from __future__ import annotations

import argparse
import heapq
import itertools
import math
import re
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

DEFAULT_CAP = 1 << 12   # default ranges stretch at most this far
MAX_BOX = 1 << 17       # points the model may rank
MAX_SCAN = 4096         # points counted one by one when no polynomial fits

_SI = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_BUDGET = re.compile(r"(\d{1,3}(?:,\d{3})+|\d+(?:_\d+)*)(\.\d+)?\s*([kmg]?)", re.IGNORECASE)
_RANGE = re.compile(r"\s*([A-Za-z_]\w*)\s*=\s*(-?\d+)\s*:\s*(-?\d+)\s*")


class SolveError(Exception):
    """The spec gives the question no answer (exit 1): a varied name that is not an integer
    variable of the spec, no valid value, or none within the budget."""


class SolveUsageError(ValueError):
    """A malformed question (exit 2): a bad budget or range, a name both varied and ``--set``."""


@dataclass(frozen=True)
class Solution:
    """The answer: ``values`` of the varied variables, the exact ``parameters`` count (verified by
    ``check``) and ``set``, the overrides that reproduce it (``--set`` first, then the values)."""

    values: dict[str, int]
    parameters: int
    set: list[str]
    budget: int
    nearest: bool
    ranges: dict[str, tuple[int, int]]
    counted: int = 0          # graphs built and summed
    checked: int = 0          # full checks run
    method: str = ""          # the model that ranked the points, or "every point counted"

    def to_json(self) -> dict[str, Any]:
        return {"values": dict(self.values), "parameters": self.parameters, "set": list(self.set)}


# ------------------------------------------------------------------------------------- parsing
def parse_budget(text: str | int) -> int:
    """``"20M"`` -> 20_000_000; ``"19.2M"``, ``"1.5G"``, ``"500k"``, ``"130647294"``, ``"31,443,440"``
    (SI: k = 10^3, M = 10^6, G = 10^9). Raises SolveUsageError."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _BUDGET.fullmatch(str(text).strip())
        if m is None:
            raise SolveUsageError(f"budget '{text}': write a number of parameters, e.g. 130647294, 31,443,440, "
                                  f"4M, 19.2M, 1.5G or 500k (k = 10^3, M = 10^6, G = 10^9)")
        exact = Decimal(m[1].replace(",", "").replace("_", "") + (m[2] or "")) * _SI[m[3].lower()]
        if exact != exact.to_integral_value():
            raise SolveUsageError(f"budget '{text}' is {exact:,f} parameters: a budget must be a whole number")
        value = int(exact)
    if not 0 < value <= 10**18:
        raise SolveUsageError(f"budget '{text}': a budget must be a positive number of parameters, at most 10^18")
    return value


def parse_range(text: str) -> tuple[str, tuple[int, int]]:
    """``"filters=32:128"`` -> ("filters", (32, 128)), inclusive. Raises SolveUsageError."""
    m = _RANGE.fullmatch(text)
    if m is None:
        raise SolveUsageError(f"range '{text}' must look like NAME=LO:HI with whole numbers, e.g. filters=32:128")
    lo, hi = int(m[2]), int(m[3])
    if lo > hi:
        raise SolveUsageError(f"range '{text}': LO {lo} is above HI {hi}")
    return m[1], (lo, hi)


def _overrides(overrides: Mapping[str, Any] | Iterable[str]) -> dict[str, Any]:
    from ..errors import SpecError
    from ..language.evaluate import parse_override
    if isinstance(overrides, Mapping):
        return dict(overrides)
    out: dict[str, Any] = {}
    for o in overrides:
        if o.strip().startswith("train."):
            raise SolveUsageError(f"--set {o}: train settings do not change the parameter count; leave it out")
        try:
            key, value = parse_override(o)
        except SpecError as e:
            raise SolveUsageError(str(e)) from None
        out[key] = value
    return out


# ------------------------------------------------------------------------------------- counting
class _Counter:
    """Exact parameter counts of points, memoized; None for an invalid point (see the module doc).
    The graphs of the last few points are kept for :meth:`check`."""

    KEEP = 8

    def __init__(self, path: str, fixed: dict[str, Any], names: Sequence[str]):
        from ..errors import Source, SpecError
        from ..language.parse import parse_text
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise SpecError(f"cannot read {path}: {e.strerror or e}", None, Source("", path)) from None
        self.doc = parse_text(data, path)
        self.source = Source(data.decode("utf-8").lstrip("\ufeff"), path)
        self.fixed, self.names = fixed, tuple(names)
        self.known: dict[tuple[int, ...], int | None] = {}
        self.graphs: dict[tuple[int, ...], tuple] = {}

    def spec(self, values: Mapping[str, Any] | None = None):
        """The spec with ``values`` over the fixed overrides: what ``load`` gives (raises SpecError)."""
        from ..errors import Loc, SpecError
        from ..language.evaluate import Evaluator
        try:
            return Evaluator(self.doc, self.source, {**self.fixed, **(values or {})}).run()
        except SpecError as e:
            raise e.with_source(self.source) from None
        except RecursionError:
            raise SpecError("the spec is nested too deeply", Loc(1, 1), self.source) from None

    def _build(self, point: tuple[int, ...]) -> tuple | None:
        """(spec, graph, diagnostics) of ``point``, or None when the spec does not evaluate."""
        from ..errors import SpecError
        from ..graph.builder import build
        try:
            spec = self.spec(dict(zip(self.names, point)))
        except SpecError:
            return None
        return (spec, *build(spec))

    def __call__(self, point: tuple[int, ...]) -> int | None:
        if point not in self.known:
            built = self._build(point)
            if built is None or not built[1].graph.get("complete") or built[2].errors:
                self.known[point] = None
            else:
                self.known[point] = sum(d["params"] for _, d in built[1].nodes(data=True))
                self.graphs[point] = built
                if len(self.graphs) > self.KEEP:
                    del self.graphs[next(iter(self.graphs))]
        return self.known[point]

    def check(self, point: tuple[int, ...]):
        """The full check's report for ``point``: ``check``'s audit (graph/check.py ``check_graph``) of
        the spec evaluated with these overrides, what ``augflow-dsl check SPEC --set ...`` runs."""
        from ..graph.check import check_graph
        built = self.graphs.pop(point, None) or self._build(point)
        return check_graph(*built)

    def valid(self) -> dict[tuple[int, ...], int]:
        return {p: c for p, c in self.known.items() if c is not None}


# ------------------------------------------------------------------------------------- the model
Kind = tuple[tuple[int, ...], tuple[int, ...]]  # (period, degree) of each variable
_OPTIONS = ((1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3))  # one variable's (period, degree)


def _ladder(k: int) -> list[Kind]:
    """The model kinds for ``k`` variables in the order tried: degree 2 in each variable (widths enter
    squared, depths linearly), then every kind by its number of coefficients."""
    kinds = [(tuple(o[0] for o in c), tuple(o[1] for o in c)) for c in itertools.product(_OPTIONS, repeat=k)]
    kinds.sort(key=lambda kd: (math.prod(kd[0]) * math.prod(d + 1 for d in kd[1]), sum(kd[0]), sum(kd[1]), kd))
    first = ((1,) * k, (2,) * k)
    return [first] + [kd for kd in kinds if kd != first]


def _within(kind: Kind, other: Kind) -> bool:
    """Whether every quasi-polynomial of ``kind`` is one of ``other`` (so refuted with it)."""
    return all(p <= q and d <= e for p, q, d, e in zip(kind[0], other[0], kind[1], other[1]))


class _Inconsistent(Exception):
    """No polynomial of the kind fits every count."""


class _Exhausted(Exception):
    """A residue class has too few values to determine its polynomial."""


def _grid(coef: Mapping[tuple[int, ...], int], degrees: Sequence[int], axes: Sequence[range]) -> list[int]:
    """sum_e coef[e] prod x_i^e_i at every point of the box, in ``itertools.product`` order."""
    d = degrees[0]
    if len(axes) == 1:
        cs = [coef.get((e,), 0) for e in range(d + 1)]
        out = []
        for x in axes[0]:
            v = 0
            for c in reversed(cs):
                v = v * x + c
            out.append(v)
        return out
    subs = [_grid({k[1:]: c for k, c in coef.items() if k[0] == e}, degrees[1:], axes[1:]) for e in range(d + 1)]
    out = []
    for x in axes[0]:
        powers = [x ** e for e in range(d + 1)]
        out.extend(sum(p * s[j] for p, s in zip(powers, subs)) for j in range(len(subs[0])))
    return out


def _fit(points: Mapping[tuple[int, ...], int], degrees: Sequence[int]) -> dict[tuple[int, ...], Fraction] | None:
    """The coefficients of the polynomial of ``degrees`` (one per variable) through every point, by
    exact elimination; None when the points do not determine it; _Inconsistent when none fits."""
    basis = list(itertools.product(*(range(d + 1) for d in degrees)))
    m = len(basis)
    rows = [[Fraction(math.prod(x ** e for x, e in zip(p, exps))) for exps in basis] + [Fraction(c)]
            for p, c in points.items()]
    r, pivots = 0, []
    for col in range(m):
        piv = next((i for i in range(r, len(rows)) if rows[i][col] != 0), None)
        if piv is None:
            continue
        rows[r], rows[piv] = rows[piv], rows[r]
        inv = 1 / rows[r][col]
        rows[r] = [v * inv for v in rows[r]]
        for i, row in enumerate(rows):
            if i != r and row[col] != 0:
                f = row[col]
                rows[i] = [a - f * b for a, b in zip(row, rows[r])]
        pivots.append(col)
        r += 1
    if any(row[m] != 0 for row in rows[r:]):  # below the pivots the rows are zero on the left
        raise _Inconsistent
    if r < m:
        return None
    return {basis[col]: rows[i][m] for i, col in enumerate(pivots) if rows[i][m]}


@dataclass
class _Model:
    """A quasi-polynomial: one polynomial of ``degrees`` per residue class of the point mod ``periods``,
    integer coefficients over the common denominator ``den``; a class mapped to None had no valid
    point among its first seeds and is taken as invalid."""

    periods: tuple[int, ...]
    degrees: tuple[int, ...]
    classes: dict[tuple[int, ...], dict[tuple[int, ...], int] | None]
    den: int

    @classmethod
    def of(cls, kind: Kind, fits: dict[tuple[int, ...], dict | None]) -> "_Model":
        den = math.lcm(1, *(v.denominator for f in fits.values() if f for v in f.values()))
        return cls(*kind, {r: None if f is None else {e: int(v * den) for e, v in f.items()}
                           for r, f in fits.items()}, den)

    def text(self) -> str:
        per = "" if set(self.periods) == {1} else f", per residue mod {'/'.join(map(str, self.periods))}"
        return f"polynomial of degree {'/'.join(map(str, self.degrees))}{per}"

    def at(self, point: Sequence[int]) -> int | None:
        """The prediction times ``den`` (None: an invalid class)."""
        coef = self.classes.get(tuple(x % p for x, p in zip(point, self.periods)))
        if coef is None:
            return None
        return sum(c * math.prod(x ** e for x, e in zip(point, exps)) for exps, c in coef.items())

    def predict(self, axes: Sequence[range]) -> Iterable[tuple[tuple[int, ...], int]]:
        """(point, prediction times ``den``) for every point of the box outside the invalid classes."""
        for r, coef in self.classes.items():
            sub = [range(a.start + (ri - a.start) % p, a.stop, p) for a, ri, p in zip(axes, r, self.periods)]
            if coef is not None and all(sub):
                yield from zip(itertools.product(*sub), _grid(coef, self.degrees, sub))


def _seeds(c: int, lo: int, hi: int, period: int = 1) -> list[int]:
    """Values of one variable in lo..hi congruent to c mod ``period`` to fit on, best first: c, c +- g,
    c +- 2g, ... (g the largest power of two dividing c, at most a quarter of the range, and a multiple
    of the period), then the rest by distance from c."""
    g = c & -c if c > 0 else 1
    while g > period and 4 * g > hi - lo:
        g //= 2
    g = max(g, period)
    steps = [c + s * j * g for j in range(1, (hi - lo) // g + 1) for s in (1, -1)]
    first = list(dict.fromkeys(v for v in [c, *steps] if lo <= v <= hi))
    taken = set(first)
    near = (c + s * j * period for j in range(1, (hi - lo) // period + 1) for s in (-1, 1))
    return first + [v for v in near if lo <= v <= hi and v not in taken]


def _nearest_in_class(c: int, r: int, period: int, axis: range) -> int | None:
    """The value of ``axis`` congruent to r mod ``period`` closest to c (in the axis), the smaller on a tie."""
    low = c - (c - r) % period
    inside = [v for v in (low, low + period) if v in axis]
    return min(inside, key=lambda v: (abs(v - c), v)) if inside else None


# ------------------------------------------------------------------------------------- the search
@dataclass
class _Search:
    budget: int
    names: tuple[str, ...]
    start: tuple[int, ...]             # the spec's values (clipped into the box)
    axes: list[range]                  # the search box
    spans: list[range]                 # where seeds may be taken (the box, or 1..DEFAULT_CAP by default)
    defaults: set[str]                 # variables whose HI follows the model (no --range)
    nearest: bool
    counter: _Counter
    sets: list[str]
    kinds: list[Kind] = field(default_factory=list)
    rung: int = 0                      # index into kinds; len(kinds): every point counted
    refuted: list[Kind] = field(default_factory=list)
    model: _Model | None = None
    checked: int = 0
    rejected: set = field(default_factory=set)
    _seed_cache: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kinds = _ladder(len(self.names))

    # the model --------------------------------------------------------------------------------
    def fit(self) -> None:
        """The first model kind, from the current rung, that fits every count (counting the seeds it
        needs); every point of the box counted when none does."""
        while self.rung < len(self.kinds):
            try:
                self.model = self._fit(self.kinds[self.rung])
                return
            except _Inconsistent:
                self.next_kind()
            except _Exhausted:
                break
        self.scan()

    def next_kind(self) -> None:
        """Refute the current kind: on to the next one not within a refuted kind."""
        self.refuted.append(self.kinds[self.rung])
        self.rung += 1
        while self.rung < len(self.kinds) and any(_within(self.kinds[self.rung], r) for r in self.refuted):
            self.rung += 1

    def _class_seeds(self, r: tuple[int, ...], periods: tuple[int, ...]) -> list[list[int]] | None:
        """Each variable's seed values in class ``r`` mod ``periods`` (None: the class has no value)."""
        if (r, periods) not in self._seed_cache:
            centres = [_nearest_in_class(s, ri, p, a) for s, ri, p, a in zip(self.start, r, periods, self.spans)]
            self._seed_cache[r, periods] = None if None in centres else [
                _seeds(c, a.start, a.stop - 1, p) for c, a, p in zip(centres, self.spans, periods)]
        return self._seed_cache[r, periods]

    def _in_class(self, r: tuple[int, ...], periods: Sequence[int]) -> dict[tuple[int, ...], int]:
        return {q: c for q, c in self.counter.valid().items() if all(x % p == ri for x, p, ri in zip(q, periods, r))}

    def _fit(self, kind: Kind) -> _Model:
        periods, degrees = kind
        fits: dict[tuple[int, ...], dict | None] = {}
        for r in itertools.product(*(range(p) for p in periods)):
            seeds = self._class_seeds(r, periods)
            if seeds is None:
                continue
            n = [d + 1 for d in degrees]
            while True:  # the counts so far, then the seed grid, growing until they determine the fit
                pts = self._in_class(r, periods)
                coef = _fit(pts, degrees)
                if coef is not None:
                    fits[r] = coef
                    break
                grid = [q for q in itertools.product(*(s[:m] for s, m in zip(seeds, n))) if q not in self.counter.known]
                if grid:
                    for q in grid:
                        self.counter(q)
                    continue
                if not pts and max(periods) > 1 and all(m >= d + 2 for m, d in zip(n, degrees)):
                    fits[r] = None  # no valid point among the class's first seeds: taken as invalid
                    break
                if all(m >= len(s) for m, s in zip(n, seeds)):
                    raise _Exhausted
                n = [m + 1 for m in n]
        return _Model.of(kind, fits)

    def refit(self) -> None:
        """After a count the model missed: the same kind through every count, else the next kinds."""
        try:
            self.model = self._fit(self.kinds[self.rung])
        except _Inconsistent:
            self.next_kind()
            self.fit()
        except _Exhausted:
            self.scan()

    def scan(self) -> None:
        size = math.prod(len(a) for a in self.axes)
        if size > MAX_SCAN:
            raise SolveError(f"the parameter count is not a polynomial of degree <= 3 in {', '.join(self.names)} "
                             f"(per residue mod 2) over {self.box_text()}, and counting all {size:,} points one "
                             f"by one is refused (at most {MAX_SCAN:,}): narrow it with --range")
        self.rung, self.model = len(self.kinds), None
        for q in itertools.product(*self.axes):
            self.counter(q)

    def confirmed(self, point: tuple[int, ...]) -> bool:
        """Whether the model stands at ``point``, a candidate it predicted right: its neighbours one up
        in each combination of variables (one down at the box's edge), the likeliest competitors and
        in the other residues mod 2, are counted and predicted right too (or invalid), and its class
        holds more counts than its polynomial has coefficients (else the class's next seed is counted).
        False when a count moved the model (the caller ranks again)."""
        if self.model is None:
            return True
        for delta in itertools.product((0, 1), repeat=len(point)):
            q = tuple(x + d if x + d in ax else x - d for x, d, ax in zip(point, delta, self.axes))
            if q != point and not self._agrees(q):
                return False
        return self._confirm_class(tuple(x % p for x, p in zip(point, self.model.periods)))

    def _confirm_class(self, r: tuple[int, ...]) -> bool:
        """Count more points of class ``r`` until its valid counts outnumber its polynomial's
        coefficients and, along each variable, the line through the class's centre holds one valid
        count more than the variable's degree needs (a few tries past invalid values); False when one
        of them moved the model."""
        periods, degrees = self.model.periods, self.model.degrees
        seeds = self._class_seeds(r, periods)
        if seeds is None:
            return True
        centre = [s[0] for s in seeds]
        need = math.prod(d + 1 for d in degrees) + 1
        for _ in range(3 * len(degrees) + 2):
            pts = self._in_class(r, periods)
            lines = [{q[i] for q in pts if all(x == c for j, (x, c) in enumerate(zip(q, centre)) if j != i)}
                     for i in range(len(degrees))]
            short = [i for i, d in enumerate(degrees) if len(lines[i]) < d + 2]
            if short:
                i = short[0]
                tries = (tuple(v if j == i else c for j, c in enumerate(centre)) for v in seeds[i]
                         if v not in lines[i])
            elif len(pts) < need:
                tries = itertools.product(*(s[:d + 3] for s, d in zip(seeds, degrees)))
            else:
                return True
            q = next((q for q in tries if q not in self.counter.known), None)
            if q is None:
                return True  # nothing left to count there
            if not self._agrees(q):
                return False
        return True

    def confirmed_all(self) -> bool:
        """Every class of the model confirmed (see :meth:`_confirm_class`); False when the model moved."""
        if self.model is None:
            return True
        return all(self._confirm_class(r) for r, coef in list(self.model.classes.items()) if coef is not None)

    def _agrees(self, point: tuple[int, ...]) -> bool:
        """Count ``point``; refit and return False when it is valid and the model predicted otherwise."""
        exact = self.counter(point)
        if exact is None or exact * self.model.den == self.model.at(point):
            return True
        self.refit()
        return False

    def extend(self) -> None:
        """Stretch the default HI of each variable to the largest value up to DEFAULT_CAP at which the
        model predicts at most the budget, the other variables at their values (one more with
        ``nearest``); never below the initial max(2 v, 8) nor below an earlier stretch."""
        if self.model is None:
            return
        for i, name in enumerate(self.names):
            ax = self.axes[i]
            if name not in self.defaults or ax.stop > DEFAULT_CAP:
                continue
            line = [range(s, s + 1) for s in self.start]
            line[i] = range(ax.stop, DEFAULT_CAP + 1)
            within = [q[i] for q, v in self.model.predict(line) if v <= self.budget * self.model.den]
            if within:
                self.axes[i] = range(ax.start, min(max(within) + 1 + self.nearest, DEFAULT_CAP + 1))

    # the search -------------------------------------------------------------------------------
    def predictions(self) -> tuple[Iterable[tuple[tuple[int, ...], int]], int]:
        """(point, predicted count times den) over the box, and den; the exact counts once scanned."""
        if self.model is not None:
            return self.model.predict(self.axes), self.model.den
        return ((q, c) for q in itertools.product(*self.axes) if (c := self.counter.known[q]) is not None), 1

    def run(self, objective: str) -> Solution | None:
        """The best point for ``objective`` (``under``: the largest count at or under the budget;
        ``nearest``; ``fewest``) that the full check passes, or None."""
        while True:
            self.extend()
            size = math.prod(len(a) for a in self.axes)
            if size > MAX_BOX:
                raise SolveUsageError(f"the search box {self.box_text()} has {size:,} points (at most "
                                      f"{MAX_BOX:,}): narrow it with --range NAME=LO:HI")
            preds, den = self.predictions()
            b = self.budget * den
            heap = []
            for q, v in preds:
                if objective == "under" and v > b:
                    continue
                dist = sum(abs(x - s) for x, s in zip(q, self.start))
                key = {"under": (b - v,), "nearest": (abs(v - b), v > b), "fewest": (v,)}[objective]
                heap.append((*key, dist, q, v))
            heapq.heapify(heap)
            while heap:
                *_, point, pred = heapq.heappop(heap)
                exact = None if point in self.rejected else self.counter(point)
                if exact is None:
                    continue
                if exact * den != pred:  # the model missed: refit through this count too, and rank again
                    self.refit()
                    break
                if not self.confirmed(point):  # the model moved: rank again
                    break
                report = self.counter.check(point)
                self.checked += 1
                if report.valid and report.parameters.total == exact:
                    return Solution(values=dict(zip(self.names, point)), parameters=exact,
                                    set=self.sets + [f"{n}={v}" for n, v in zip(self.names, point)],
                                    budget=self.budget, nearest=objective == "nearest",
                                    ranges={n: (a.start, a.stop - 1) for n, a in zip(self.names, self.axes)},
                                    counted=len(self.counter.known), checked=self.checked,
                                    method="every point counted" if self.model is None else self.model.text())
                if report.valid:  # pragma: no cover - the count is check's own sum
                    raise AssertionError(f"solve counted {exact:,} at {point} but check counts "
                                         f"{report.parameters.total:,}")
                self.rejected.add(point)  # the audit refuses it
            else:  # nothing left to try: an answer only if the model held where it was not made from
                if self.confirmed_all():
                    return None

    def box_text(self) -> str:
        return " x ".join(f"{n} {a.start}..{a.stop - 1}" for n, a in zip(self.names, self.axes))

    def no_fit(self) -> str:
        """Why there is no answer: no valid point, or the fewest parameters a valid point has."""
        what = " and ".join(self.names)
        fewest = None if self.nearest else self.run("fewest")
        if fewest is None:
            return f"no value of {what} in {self.box_text()} gives a valid spec"
        at = ", ".join(f"{n}={v}" for n, v in fewest.values.items())
        return (f"no value of {what} in {self.box_text()} gives at most {self.budget:,} parameters: the "
                f"fewest is {fewest.parameters:,} ({at})")


def solve(path: str | Path, budget: int | str, vary: str | Sequence[str], *, nearest: bool = False,
          overrides: Mapping[str, Any] | Iterable[str] = (),
          ranges: Mapping[str, tuple[int, int]] | None = None) -> Solution:
    """Integer values of the ``vary`` variables of the spec at ``path`` whose parameter count is the
    largest at or under ``budget`` (``nearest``: the closest to it); ``overrides`` fix other
    variables; ``ranges`` maps a varied name to (LO, HI), inclusive. Raises SolveUsageError (a
    malformed question), SolveError (no answer) or SpecError (the spec does not load)."""
    from ..errors import did_you_mean

    path = str(path)
    budget = parse_budget(budget)
    names = (vary,) if isinstance(vary, str) else tuple(vary)
    if not names:
        raise SolveUsageError("name at least one variable to vary (--vary NAME)")
    if len(set(names)) != len(names):
        raise SolveUsageError(f"a variable is named twice in --vary: {', '.join(names)}")
    ranges = dict(ranges or {})
    for name, (lo, hi) in ranges.items():
        if name not in names:
            raise SolveUsageError(f"--range {name}=...: '{name}' is not varied (--vary {name})")
        if lo > hi:
            raise SolveUsageError(f"--range {name}={lo}:{hi}: LO is above HI")
    sets = [f"{k}={v}" for k, v in overrides.items()] if isinstance(overrides, Mapping) else list(overrides)
    fixed = _overrides(overrides)
    both = [n for n in names if n in fixed]
    if both:
        raise SolveUsageError(f"'{both[0]}' is both varied and fixed with --set; leave out one")
    if not Path(path).is_file():
        raise SolveUsageError(f"no such spec file: {path}")

    counter = _Counter(path, fixed, names)
    spec = counter.spec()
    ints = [k for k, v in spec.variables.items() if isinstance(v, int) and not isinstance(v, bool)]
    for n in names:
        if n not in spec.variables:
            raise SolveError(f"the spec defines no variable '{n}'{did_you_mean(n, spec.variables)}; its integer "
                             f"variables are: {', '.join(ints) or 'none'}")
        if n not in ints:
            raise SolveError(f"variable '{n}' is {spec.variables[n]!r}, not an integer; solve varies integer "
                             f"variables: {', '.join(ints) or 'none'}")
    axes, spans = [], []
    for n in names:
        v = spec.variables[n]
        if n in ranges:
            axes.append(range(ranges[n][0], ranges[n][1] + 1))
            spans.append(axes[-1])
        else:
            lo = min(1, v)
            axes.append(range(lo, max(2 * v, 8, lo) + 1))
            spans.append(range(lo, max(DEFAULT_CAP, axes[-1].stop - 1) + 1))
    start = tuple(min(max(spec.variables[n], a.start), a.stop - 1) for n, a in zip(names, axes))
    search = _Search(budget, names, start, axes, spans, {n for n in names if n not in ranges}, nearest,
                     counter, sets)
    search.fit()
    solution = search.run("nearest" if nearest else "under")
    if solution is None:
        raise SolveError(search.no_fit())
    return solution


# ------------------------------------------------------------------------------------- the command
def _budget_arg(text: str) -> int:
    try:
        return parse_budget(text)
    except SolveUsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _range_arg(text: str) -> tuple[str, tuple[int, int]]:
    try:
        return parse_range(text)
    except SolveUsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_command(sub, common) -> None:
    p = sub.add_parser(
        "solve", help="integer values of let variables that fit a parameter budget (no torch)",
        description="Find integer values of the --vary variables whose analytic parameter count is the largest "
                    "at or under the budget (--nearest: the closest to it), verified by check. Values that make "
                    "the spec invalid are skipped. Exit 0 solved, 1 no answer or a bad spec, 2 usage.")
    p.add_argument("spec")
    p.add_argument("--params", required=True, type=_budget_arg, metavar="BUDGET",
                   help="the budget: a number of parameters (130647294, 31,443,440) or SI units, k = 10^3, "
                        "M = 10^6, G = 10^9 (500k, 4M, 19.2M, 1.5G)")
    p.add_argument("--vary", action="append", required=True, metavar="NAME",
                   help="an integer 'let' variable to choose (repeatable: the values are chosen jointly)")
    p.add_argument("--nearest", action="store_true",
                   help="the count closest to the budget, above or below (default: the largest at or under it)")
    p.add_argument("--range", action="append", default=[], type=_range_arg, metavar="NAME=LO:HI",
                   help="search NAME in LO..HI inclusive (default: 1 .. max(2 v, 8) for the spec's value v, "
                        f"stretched to the largest value up to {DEFAULT_CAP} predicted within the budget)")
    p.add_argument("--json", action="store_true", help='print {"values": {...}, "parameters": N, "set": [...]}')
    common(p)
    p.set_defaults(func=cmd_solve)


def cmd_solve(args) -> int:
    import json

    from ..errors import SpecError

    ranges: dict[str, tuple[int, int]] = {}
    try:
        for name, r in args.range:
            if name in ranges:
                raise SolveUsageError(f"--range {name} is given twice")
            ranges[name] = r
        sol = solve(args.spec, args.params, args.vary, nearest=args.nearest, overrides=args.set, ranges=ranges)
    except SolveUsageError as e:
        _error(f"error: {e}")
        return 2
    except SolveError as e:
        _error(f"error: {e}")
        return 1
    except SpecError as e:
        print(str(e), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(sol.to_json()))
        return 0
    diff = sol.parameters - sol.budget
    sets = " ".join(f"--set {s}" for s in sol.set)
    print("  ".join(f"{n} = {v}" for n, v in sol.values.items()))
    print(f"parameters: {sol.parameters:,}  (budget {sol.budget:,}: {diff:+,}, {100 * diff / sol.budget:+.2f}%)")
    print(sets)
    print(f"searched {' x '.join(f'{n} {lo}..{hi}' for n, (lo, hi) in sol.ranges.items())} for the count "
          f"{'nearest to' if sol.nearest else 'largest at or under'} the budget: {sol.counted} counted, "
          f"{sol.checked} fully checked (model: {sol.method})")
    return 0


def _error(message: str) -> None:
    from rich.markup import escape

    from ..cli.common import console as _console
    _console(stderr=True).print(f"[red]{escape(message)}[/red]", soft_wrap=True)
