"""Regions: which elements of a tensor a conditioner reads, or an op leaves unchanged. Pure Python.

A region is a range of channels (features, for vector data) at a pattern of positions, the
structure every split of :func:`augflow_dsl.ops.shapes.halves` has:

* ``channels``: identity part = channels ``[0, ceil(C/2))`` at all positions;
* ``columns``: all channels at the even columns (``x[..., 0::2]``);
* ``checkerboard``: all channels where ``(i + j)`` is even (RealNVP's mask, layers/splits.py), or
  odd with ``parity: odd`` (the alternating mask of RealNVP's Sec. 3.4).

The audit asks ``read ⊆ unchanged``: a coupling's net may read only elements the coupling
passes through unchanged, for then the inverse has them before it runs the net and the
Jacobian is triangular with the diagonal the log-det sums (RealNVP eq. 6-8).
Example: a ``columns`` coupling on 3x32x32 leaves ``Region((0, 3), "even_columns")``
unchanged; a net reading ``Region((0, 2), "all")`` (a channel half) is refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Shape = tuple[int, ...]

Positions = Literal["all", "even_columns", "odd_columns", "checker_even", "checker_odd"]

_WORDS = {"all": "every position", "even_columns": "the even columns", "odd_columns": "the odd columns",
          "checker_even": "the checkerboard squares with i + j even",
          "checker_odd": "the checkerboard squares with i + j odd"}


_AT = {"all": lambda i, j: True, "even_columns": lambda i, j: j % 2 == 0, "odd_columns": lambda i, j: j % 2 == 1,
       "checker_even": lambda i, j: (i + j) % 2 == 0, "checker_odd": lambda i, j: (i + j) % 2 == 1}


@dataclass(frozen=True)
class Region:
    """Channels ``channels[0] <= c < channels[1]`` at the positions named by ``positions``."""

    channels: tuple[int, int]
    positions: Positions = "all"

    @staticmethod
    def whole(shape: Shape) -> "Region":
        return Region((0, shape[0]), "all")

    def empty(self) -> bool:
        return self.channels[0] >= self.channels[1]

    def within(self, other: "Region") -> bool:
        """Is every element of this region in ``other``?"""
        if self.empty():
            return True
        lo, hi = self.channels
        channels_ok = other.channels[0] <= lo and hi <= other.channels[1]
        return channels_ok and (other.positions == "all" or other.positions == self.positions)

    def contains(self, shape: Shape) -> list[bool]:
        """One flag per element of a tensor of ``shape`` (flat, channel-major order): is it in the region?"""
        c = shape[0]
        h, w = (shape[1], shape[2]) if len(shape) == 3 else (1, 1)
        at = _AT[self.positions]
        plane = [at(i, j) for i in range(h) for j in range(w)]
        lo, hi = self.channels
        return [lo <= ch < hi and p for ch in range(c) for p in plane]

    def __str__(self) -> str:
        lo, hi = self.channels
        ch = f"channel {lo}" if hi - lo == 1 else f"channels {lo}..{hi - 1}"
        return f"{ch} at {_WORDS[self.positions]}"


def split_parts(split: str, shape: Shape, parity: str = "even") -> tuple[Region, Region]:
    """(identity part, transformed part) of ``split`` on ``shape``, as regions. ``parity`` (a
    checkerboard's only): which squares stay unchanged, ``even`` (i + j even) or ``odd``."""
    c = shape[0]
    if split == "channels":
        c1 = (c + 1) // 2
        return Region((0, c1)), Region((c1, c))
    if split == "columns":
        return Region((0, c), "even_columns"), Region((0, c), "odd_columns")
    if split == "checkerboard":
        even, odd = Region((0, c), "checker_even"), Region((0, c), "checker_odd")
        return (odd, even) if parity == "odd" else (even, odd)
    raise ValueError(f"unknown split '{split}'")


@dataclass(frozen=True)
class Read:
    """What a condition edge carries: the ``region`` of the tensor that node ``node`` hands on at
    ``port`` ("out", or "kept" after a drop)."""

    node: str
    port: str
    region: Region

    def __str__(self) -> str:
        return f"{self.region} of {self.node}" + (f" ({self.port})" if self.port != "out" else "")


__all__ = ["Region", "Read", "split_parts", "Positions"]
