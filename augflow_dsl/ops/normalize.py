"""actnorm: per-channel or per-element affine normalisation with data-dependent init."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .net_descriptions import Act, Kept
from .registry import BIJECTION, MemoryIn, Op, OpArgs, register
from .shapes import halves, is_image, numel


@register
class ActNorm(Op):
    """Glow's actnorm (Kingma & Dhariwal 2018, Sec. 3.1): y = (x - b) * exp(-log s), log s and b
    set from the first batch so its output has zero mean and unit variance.

    ``per: channel`` (Glow, DenseFlow actnorm.py) keeps one (s, b) per channel;
    ``per: element`` (Flow++ flows.py:328-365) one per element. ``split: columns`` keeps a
    separate set for each half of an even/odd-column split; for per-element parameters the
    halves partition the elements, so the count is the same either way.
    """

    summary = "activation normalisation with data-dependent init (Glow), per channel or per element"
    equation = "Glow (Kingma & Dhariwal 2018) Sec. 3.1; DenseFlow actnorm.py; Flow++ flows.py:328-365"
    shape_rule = "shape unchanged; `split: channels` needs C even, `split: columns` W even"

    name = "actnorm"
    role = BIJECTION

    class Args(OpArgs):
        per: Literal["channel", "element"] = Field(default="channel", description=(
            "channel: one (log s, b) per channel (Glow, DenseFlow); element: one per element (Flow++)"))
        split: Literal["none", "channels", "columns"] = Field(default="none", description=(
            "none, or keep a separate (log s, b) for each half of a channel or even/odd-column split"))

    def out_shape(self, a, shape, env):
        if a.split != "none":
            halves(a.split, shape, equal=True)
        return shape

    def params(self, a, shape, env):
        if a.per == "element":
            return 2 * numel(shape)
        c = shape[0]
        return 4 * c if (a.split == "columns" and is_image(shape)) else 2 * c

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """x * exp(log s) keeps x and, per batch, exp(log s) (expanded across the columns of a
        column split)."""
        scale = numel(shape) if a.per == "element" or (a.split == "columns" and is_image(shape)) else shape[0]
        return Kept(Act(numel(shape), m.precision.flow), input=True, fixed=scale * 4)
