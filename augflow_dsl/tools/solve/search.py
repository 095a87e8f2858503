"""The search: the model ranks every point of the box, points are counted in order of predicted merit
until one is counted as predicted and the model holds around it, and that point is verified by
``check``'s audit; :func:`solve` sets the question up (names, ranges, the box)."""
from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .counting import Counter
from .polynomial import (Exhausted, Inconsistent, Kind, Model, fit_polynomial, ladder, nearest_in_class,
                    seed_values, within)
from .question import (DEFAULT_CAP, MAX_BOX, MAX_SCAN, Solution, SolveError, SolveUsageError, fixed_overrides,
                       parse_budget)

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
    counter: Counter
    sets: list[str]
    kinds: list[Kind] = field(default_factory=list)
    rung: int = 0                      # index into kinds; len(kinds): every point counted
    refuted: list[Kind] = field(default_factory=list)
    model: Model | None = None
    checked: int = 0
    rejected: set = field(default_factory=set)
    _seed_cache: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kinds = ladder(len(self.names))

    # the model --------------------------------------------------------------------------------
    def fit(self) -> None:
        """The first model kind, from the current rung, that fits every count (counting the seeds it
        needs); every point of the box counted when none does."""
        while self.rung < len(self.kinds):
            try:
                self.model = self._fit(self.kinds[self.rung])
                return
            except Inconsistent:
                self.next_kind()
            except Exhausted:
                break
        self.scan()

    def next_kind(self) -> None:
        """Refute the current kind: on to the next one not within a refuted kind."""
        self.refuted.append(self.kinds[self.rung])
        self.rung += 1
        while self.rung < len(self.kinds) and any(within(self.kinds[self.rung], r) for r in self.refuted):
            self.rung += 1

    def _class_seeds(self, r: tuple[int, ...], periods: tuple[int, ...]) -> list[list[int]] | None:
        """Each variable's seed values in class ``r`` mod ``periods`` (None: the class has no value)."""
        if (r, periods) not in self._seed_cache:
            centres = [nearest_in_class(s, ri, p, a) for s, ri, p, a in zip(self.start, r, periods, self.spans)]
            self._seed_cache[r, periods] = None if None in centres else [
                seed_values(c, a.start, a.stop - 1, p) for c, a, p in zip(centres, self.spans, periods)]
        return self._seed_cache[r, periods]

    def _in_class(self, r: tuple[int, ...], periods: Sequence[int]) -> dict[tuple[int, ...], int]:
        return {q: c for q, c in self.counter.valid().items() if all(x % p == ri for x, p, ri in zip(q, periods, r))}

    def _fit(self, kind: Kind) -> Model:
        periods, degrees = kind
        fits: dict[tuple[int, ...], dict | None] = {}
        for r in itertools.product(*(range(p) for p in periods)):
            seeds = self._class_seeds(r, periods)
            if seeds is None:
                continue
            n = [d + 1 for d in degrees]
            while True:  # the counts so far, then the seed grid, growing until they determine the fit
                pts = self._in_class(r, periods)
                coef = fit_polynomial(pts, degrees)
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
                    raise Exhausted
                n = [m + 1 for m in n]
        return Model.of(kind, fits)

    def refit(self) -> None:
        """After a count the model missed: the same kind through every count, else the next kinds."""
        try:
            self.model = self._fit(self.kinds[self.rung])
        except Inconsistent:
            self.next_kind()
            self.fit()
        except Exhausted:
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
    from ...errors import did_you_mean

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
    fixed = fixed_overrides(overrides)
    both = [n for n in names if n in fixed]
    if both:
        raise SolveUsageError(f"'{both[0]}' is both varied and fixed with --set; leave out one")
    if not Path(path).is_file():
        raise SolveUsageError(f"no such spec file: {path}")

    counter = Counter(path, fixed, names)
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

