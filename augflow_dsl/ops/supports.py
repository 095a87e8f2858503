"""Supports: the set every element of a tensor lies in, for the audit's range checks. Pure Python.

The lattice is kept small, three kinds of set, each applying to every element of a tensor:

* :data:`REAL` -- all of R (the top; what a learned affine map or a coupling can reach);
* :class:`Interval` -- an interval with open or closed ends, e.g. ``UNIT = (0, 1)`` (a sigmoid's
  output) or ``[0, 1)`` (uniformly dequantized data, ``(x + u) / 2^bits`` with ``u ~ U[0, 1)``);
* :class:`Integers` -- ``{0, ..., 2^bits - 1}``, integer data of ``bits`` bits.

Each op declares (in its registry definition) the set its input must lie in (``domain``) and
the set its output lies in as a function of its input set (``image``), and, for the sampling
direction, the set its inverse accepts (``inverse_domain``) and returns (``inverse_image``).
Images are over-approximations (a superset of the true image), so "input within domain" is
sound: what the audit accepts can only meet its op's domain. Example: ``logit(0.05)`` needs
``(-0.0556, 1.0556)``; after uniform dequantization of 8-bit data the input is ``[0, 1)``, inside;
after ``actnorm`` it is R, refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """Every element in the interval from ``lo`` to ``hi`` (infinite ends are open)."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_closed: bool = False
    hi_closed: bool = False

    def __str__(self) -> str:
        if self.lo == -math.inf and self.hi == math.inf:
            return "R"
        return f"{'[' if self.lo_closed else '('}{_num(self.lo)}, {_num(self.hi)}{']' if self.hi_closed else ')'}"


@dataclass(frozen=True)
class Integers:
    """Every element one of 0, 1, ..., 2^bits - 1 (``bits`` None: the data has no bit depth)."""

    bits: int | None

    def __str__(self) -> str:
        if self.bits is None:
            return "integers of a bit depth the data does not give (no 'bits')"
        return f"{{0, ..., {2 ** self.bits - 1}}} (integers of {self.bits} bits)"

    def hull(self) -> Interval:
        return Interval(0.0, float(2 ** self.bits - 1), True, True)


Support = Interval | Integers

REAL = Interval()
UNIT = Interval(0.0, 1.0)                              # (0, 1): a sigmoid's output
UNIT_HALF_OPEN = Interval(0.0, 1.0, lo_closed=True)    # [0, 1): torch.rand, the bin of x after / 2^bits


def _num(v: float) -> str:
    if v in (math.inf, -math.inf):
        return "inf" if v > 0 else "-inf"
    return f"{v + 0.0:.4g}"  # + 0.0: no "-0"


def as_interval(s: Support) -> Interval:
    """The smallest interval holding ``s``."""
    if isinstance(s, Interval):
        return s
    return REAL if s.bits is None else s.hull()


def subset(a: Support, b: Support) -> bool:
    """Is every point of ``a`` in ``b``?"""
    if isinstance(b, Integers):
        return isinstance(a, Integers) and a.bits is not None and b.bits is not None and a.bits <= b.bits
    a = as_interval(a)
    lo_ok = b.lo < a.lo or (b.lo == a.lo and (b.lo_closed or not a.lo_closed))
    hi_ok = a.hi < b.hi or (a.hi == b.hi and (b.hi_closed or not a.hi_closed))
    return lo_ok and hi_ok


def join(a: Support, b: Support) -> Support:
    """The smallest support holding both (the elements of a concatenation)."""
    if isinstance(a, Integers) and isinstance(b, Integers):
        return Integers(None if a.bits is None or b.bits is None else max(a.bits, b.bits))
    a, b = as_interval(a), as_interval(b)
    if a.lo < b.lo or (a.lo == b.lo and a.lo_closed):
        lo, lo_c = a.lo, a.lo_closed
    else:
        lo, lo_c = b.lo, b.lo_closed
    if a.hi > b.hi or (a.hi == b.hi and a.hi_closed):
        hi, hi_c = a.hi, a.hi_closed
    else:
        hi, hi_c = b.hi, b.hi_closed
    return Interval(lo, hi, lo_c and lo > -math.inf, hi_c and hi < math.inf)


def monotone_image(s: Support, f, domain: Interval) -> Interval:
    """The image of ``s`` under an increasing ``f`` defined on ``domain`` (ends of ``domain``
    map to -inf / inf); R when ``s`` leaves ``domain`` (the domain check reports that)."""
    s = as_interval(s)
    if not subset(s, domain):
        return REAL
    lo = -math.inf if s.lo == domain.lo else f(s.lo)
    hi = math.inf if s.hi == domain.hi else f(s.hi)
    return Interval(lo, hi, s.lo_closed and lo > -math.inf, s.hi_closed and hi < math.inf)


def shifted(s: Support, by: float) -> Interval:
    """``s + by``."""
    s = as_interval(s)
    return Interval(s.lo + by, s.hi + by, s.lo_closed, s.hi_closed)


def sigmoid(v: float) -> float:
    """1 / (1 + e^-v), with sigmoid(-inf) = 0 and sigmoid(inf) = 1."""
    return 1.0 / (1.0 + math.exp(-v)) if v > -700 else 0.0


def dequantized(noise: Support, bits: int) -> Interval:
    """The support of ``v = (x + u) / 2^bits`` for integer x of ``bits`` bits and u in ``noise``."""
    u = as_interval(noise)
    n = float(2 ** bits)
    return Interval(u.lo / n, (n - 1 + u.hi) / n, u.lo_closed, u.hi_closed)


__all__ = ["Interval", "Integers", "Support", "REAL", "UNIT", "UNIT_HALF_OPEN", "subset", "join", "as_interval",
           "monotone_image", "shifted", "sigmoid", "dequantized"]
