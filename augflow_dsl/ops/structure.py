"""Composite ops that expand into others when the graph is built."""
from __future__ import annotations

from pydantic import Field

from .registry import COMPOSITE, Op, OpArgs, OpCall, OpList, register


@register
class Block(Op):
    """A DenseFlow block (Sec. 2.3, dense_flow.py:41-43): ``units`` units, each the list
    ``modules`` followed by the cross-unit coupling ``augment``, except the last unit of
    the block. The g of unit k reads cat(block input, out_0, ..., out_{k-1})."""

    name = "block"
    role = COMPOSITE

    class Args(OpArgs):
        units: int = Field(gt=0)
        modules: OpList
        augment: OpCall | None = None
