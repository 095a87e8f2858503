"""The question ``solve`` answers and its answer: the budget and range syntax, the overrides that fix
the other variables, the two errors (no answer: exit 1; a malformed question: exit 2) and
:class:`Solution`. Pure Python."""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable, Mapping

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


def fixed_overrides(overrides: Mapping[str, Any] | Iterable[str]) -> dict[str, Any]:
    from ...errors import SpecError
    from ...language.evaluate import parse_override
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


