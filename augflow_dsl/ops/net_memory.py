"""What a layer keeps for the backward pass: the memory rules' types (pure Python, no torch).

Each layer description says, with ``kept(x, p)``, what it keeps alive for the backward pass when it
reads the activation ``x`` (:class:`Act`), at the element sizes :class:`Precision` gives; :func:`chain`
runs layers one after the other. ``augflow-dsl check --memory`` adds them up
(:mod:`augflow_dsl.graph.memory`). Public face: :mod:`.net_descriptions`.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["Precision", "Act", "Kept", "KeepsRule", "chain"]


@dataclass(frozen=True)
class Precision:
    """Element sizes of the memory rules, in bytes: ``flow`` for the flow's own arithmetic (float32),
    ``net`` for the nets' convolutions and matrix products (float32; 2 under autocast to bfloat16,
    ``FlowModel.set_precision``), ``wide`` for what autocast runs in float32 (CUDA's op lists: exp,
    layer norm, softmax; CPU's autocast runs them in bfloat16: 2). Under autocast a conv keeps a
    bfloat16 copy of a float32 input and of its weight."""

    flow: int = 4
    net: int = 4
    wide: int = 4  # what autocast runs in float32 on CUDA (exp, layer norm, softmax); CPU's autocast: 2

    @property
    def autocast(self) -> bool:
        return self.net < self.flow


@dataclass(frozen=True)
class Act:
    """An activation as the memory rules see it: ``n`` elements per example of ``b`` bytes,
    channels-last in memory (``cl``) or not."""

    n: int
    b: int = 4
    cl: bool = False

    @property
    def bytes(self) -> int:
        return self.n * self.b


@dataclass(frozen=True)
class Kept:
    """What a layer (or an op) keeps alive for the backward pass, per example.

    ``own``: bytes of the tensors it creates and keeps, its output excepted; ``input``: it keeps
    the tensor it was given (or a view of it, hence all of it), which that tensor's creator counts
    once; ``output``: it keeps the tensor it returns, ``out``; ``alias``: ``"input"`` when its output
    is its input (or a view of it: a drop's kept half, a zero dropout), ``"own"`` when its output is
    a view of a tensor ``own`` already counts; ``context``: an op keeps the context the plan hands it;
    ``fixed``: bytes per batch rather than per example (weight-sized tensors)."""

    out: Act
    own: int = 0
    input: bool = False
    output: bool = False
    alias: Literal["", "input", "own"] = ""
    context: bool = False
    fixed: int = 0

    @property
    def passes_input(self) -> bool:
        """Its output is its input (or a view of it): the same tensor goes on."""
        return self.alias == "input"

    @property
    def views_own(self) -> bool:
        """Its output is a view of a tensor ``own`` already counts."""
        return self.alias == "own"



class KeepsRule(Protocol):
    def kept(self, x: Act, p: Precision) -> Kept: ...


def chain(x: Act, layers: Iterable[KeepsRule], p: Precision) -> Kept:
    """``layers`` applied one after the other to ``x``: the tensor between two of them is kept
    (once) when the one before keeps its output or the one after keeps its input; a layer whose
    output is its input passes the tensor on."""
    own = fixed = 0
    cur, first, last = x, None, False
    for layer in layers:
        k = layer.kept(cur, p)
        own, fixed = own + k.own, fixed + k.fixed
        if k.alias == "input":
            continue
        if first is None:
            first = k.input
        elif k.input or last:
            own += cur.bytes
        last, cur = k.output, k.out
    if first is None:
        return Kept(x, own=own, fixed=fixed, alias="input")
    return Kept(cur, own=own, input=first, output=last, fixed=fixed)
