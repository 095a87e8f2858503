"""The untyped syntax tree of a .flow file: what the grammar says, with locations.

These plain dataclasses are produced by :mod:`augflow_dsl.language.parse` and read only
by :mod:`augflow_dsl.language.evaluate`, which turns them into the typed spec.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import Loc


@dataclass(frozen=True)
class Node:
    loc: Loc | None


@dataclass(frozen=True)
class Num(Node):
    value: int | float


@dataclass(frozen=True)
class Str(Node):
    value: str


@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class Pair:
    key: str
    value: Node
    loc: Loc | None


@dataclass(frozen=True)
class Call(Node):
    name: str
    args: tuple[Node, ...] = ()
    kwargs: tuple[Pair, ...] = ()


@dataclass(frozen=True)
class ListLit(Node):
    items: tuple[Node, ...] = ()


@dataclass(frozen=True)
class MapLit(Node):
    pairs: tuple[Pair, ...] = ()


@dataclass(frozen=True)
class BinOp(Node):
    op: str  # one of + - * / //
    left: Node
    right: Node


@dataclass(frozen=True)
class Neg(Node):
    operand: Node


@dataclass(frozen=True)
class Head:
    """The left side of a top-level entry: `flow`, or `module glow`, `net convattn(b)`."""

    first: str
    name: str | None = None
    params: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Entry:
    head: Head
    value: Node
    loc: Loc | None
    text: str = ""  # the value's source text (used for names such as denseflow-74-10)


@dataclass
class Document:
    entries: list[Entry] = field(default_factory=list)
