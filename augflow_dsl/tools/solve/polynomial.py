"""The model of the count: a quasi-polynomial in the varied variables (per variable a degree 1-3 and a
period 1 or 2), fitted exactly (rational arithmetic) through the counts; the kinds in the order tried;
the seed values a fit is made from."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Mapping, Sequence

# ------------------------------------------------------------------------------------- the model
Kind = tuple[tuple[int, ...], tuple[int, ...]]  # (period, degree) of each variable
_OPTIONS = ((1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3))  # one variable's (period, degree)


def ladder(k: int) -> list[Kind]:
    """The model kinds for ``k`` variables in the order tried: degree 2 in each variable (widths enter
    squared, depths linearly), then every kind by its number of coefficients."""
    kinds = [(tuple(o[0] for o in c), tuple(o[1] for o in c)) for c in itertools.product(_OPTIONS, repeat=k)]
    kinds.sort(key=lambda kd: (math.prod(kd[0]) * math.prod(d + 1 for d in kd[1]), sum(kd[0]), sum(kd[1]), kd))
    first = ((1,) * k, (2,) * k)
    return [first] + [kd for kd in kinds if kd != first]


def within(kind: Kind, other: Kind) -> bool:
    """Whether every quasi-polynomial of ``kind`` is one of ``other`` (so refuted with it)."""
    return all(p <= q and d <= e for p, q, d, e in zip(kind[0], other[0], kind[1], other[1]))


class Inconsistent(Exception):
    """No polynomial of the kind fits every count."""


class Exhausted(Exception):
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


def fit_polynomial(points: Mapping[tuple[int, ...], int],
                   degrees: Sequence[int]) -> dict[tuple[int, ...], Fraction] | None:
    """The coefficients of the polynomial of ``degrees`` (one per variable) through every point, by
    exact elimination; None when the points do not determine it; Inconsistent when none fits."""
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
        raise Inconsistent
    if r < m:
        return None
    return {basis[col]: rows[i][m] for i, col in enumerate(pivots) if rows[i][m]}


@dataclass
class Model:
    """A quasi-polynomial: one polynomial of ``degrees`` per residue class of the point mod ``periods``,
    integer coefficients over the common denominator ``den``; a class mapped to None had no valid
    point among its first seeds and is taken as invalid."""

    periods: tuple[int, ...]
    degrees: tuple[int, ...]
    classes: dict[tuple[int, ...], dict[tuple[int, ...], int] | None]
    den: int

    @classmethod
    def of(cls, kind: Kind, fits: dict[tuple[int, ...], dict | None]) -> "Model":
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


def seed_values(c: int, lo: int, hi: int, period: int = 1) -> list[int]:
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


def nearest_in_class(c: int, r: int, period: int, axis: range) -> int | None:
    """The value of ``axis`` congruent to r mod ``period`` closest to c (in the axis), the smaller on a tie."""
    low = c - (c - r) % period
    inside = [v for v in (low, low + period) if v in axis]
    return min(inside, key=lambda v: (abs(v - c), v)) if inside else None

