"""Composite ops that expand into others when the graph is built."""
from __future__ import annotations

from pydantic import Field

from .registry import COMPOSITE, Op, OpArgs, OpCall, OpList, register


@register
class Block(Op):
    """A DenseFlow block (Sec. 2.3, dense_flow.py:41-43): ``units`` units, each the list
    ``modules`` followed by the cross-unit coupling ``augment``, except the last unit of
    the block. The g of unit k reads cat(block input, out_0, ..., out_{k-1})."""

    summary = "a DenseFlow block: `units` units of `modules`, joined by cross-unit couplings"
    equation = "DenseFlow (Grcic et al. 2021) Sec. 2.3; DenseFlow dense_flow.py:41-43"
    shape_rule = "the shapes of its expansion: each unit keeps its shape, each cross-unit coupling adds growth channels"

    name = "block"
    role = COMPOSITE

    class Args(OpArgs):
        units: int = Field(gt=0, description="number of units in the block")
        modules: OpList = Field(description="the ops of one unit, e.g. 5 * glow")
        augment: OpCall | None = Field(default=None, description=(
            "the cross-unit coupling after every unit but the last, e.g. cross_unit(growth: 10); none for no "
            "augmentation"))
