"""squeeze, unsqueeze, swap: volume-preserving rearrangements (log-det 0)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .net_descriptions import Act, Kept
from .registry import BIJECTION, MemoryIn, Op, OpArgs, OpShapeError, register
from .shapes import halves, need_image, numel

Order = Literal["channel_major", "space_major"]


def squeezed(shape, factor: int = 2):
    need_image(shape, "squeeze")
    c, h, w = shape
    if h % factor or w % factor:
        odd = "height" if h % factor else "width"
        raise OpShapeError(f"squeeze by {factor}: {odd} {h if odd == 'height' else w} is not divisible by {factor}; "
                           f"squeeze only where height and width are multiples of {factor} (fewer squeezes, or "
                           f"another data shape)")
    return (c * factor * factor, h // factor, w // factor)


def unsqueezed(shape, factor: int = 2):
    need_image(shape, "unsqueeze")
    c, h, w = shape
    if c % (factor * factor):
        raise OpShapeError(f"unsqueeze by {factor}: {c} channels are not divisible by {factor * factor}; unsqueeze "
                           f"only a tensor with a multiple of {factor * factor} channels (e.g. after a squeeze)")
    return (c // (factor * factor), h * factor, w * factor)


class Rearrangement(Op):
    """A bijection that only moves elements: its output (and its inverse's) lies in the set of its input."""

    role = BIJECTION

    def image(self, a, s):
        return s

    def inverse_image(self, a, s):
        return s

    def memory(self, a, shape, env, m: MemoryIn) -> Kept:
        """Moving elements keeps nothing (its output is new)."""
        return Kept(Act(numel(shape), m.precision.flow))


class _SqueezeArgs(OpArgs):
    factor: int = Field(default=2, gt=1, description=(
        "spatial block size: factor x factor positions become factor^2 channels"))
    order: Order = Field(default="channel_major", description=(
        "channel_major: input (c, 2h+i, 2w+j) -> channel 4c+2i+j (pixel_unshuffle); space_major: (2i+j)C+c (TF)"))


@register
class Squeeze(Rearrangement):
    """Space-to-depth (RealNVP Sec. 3.6): C x H x W -> 4C x H/2 x W/2.

    ``order: channel_major`` puts input (c, 2h+i, 2w+j) at channel 4c+2i+j (DenseFlow
    squeeze.py:98-109, torch's pixel_unshuffle); ``space_major`` at (2i+j)C+c (TF's
    space_to_depth, used by the Flow++ and VFlow code).
    Example: (3, 32, 32) -> (12, 16, 16).
    """

    summary = "space-to-depth: C x H x W -> 4C x H/2 x W/2"
    equation = "RealNVP (Dinh et al. 2017) Sec. 3.6; DenseFlow squeeze.py:98-109"
    shape_rule = "C x H x W -> factor^2 C x H/factor x W/factor (H and W divisible by factor)"

    name = "squeeze"
    role = BIJECTION
    Args = _SqueezeArgs

    def out_shape(self, a, shape, env):
        return squeezed(shape, a.factor)

    def in_shape(self, a, shape, env):
        return unsqueezed(shape, a.factor)


@register
class Unsqueeze(Rearrangement):
    """Depth-to-space, the inverse of squeeze with the same ``order``: 4C x H x W -> C x 2H x 2W."""

    summary = "depth-to-space, the inverse of squeeze"
    equation = "RealNVP (Dinh et al. 2017) Sec. 3.6"
    shape_rule = "C x H x W -> C/factor^2 x factor H x factor W (C divisible by factor^2)"

    name = "unsqueeze"
    role = BIJECTION
    Args = _SqueezeArgs

    def out_shape(self, a, shape, env):
        return unsqueezed(shape, a.factor)

    def in_shape(self, a, shape, env):
        return squeezed(shape, a.factor)


@register
class Swap(Rearrangement):
    """Exchange the two parts of a split (DenseFlow channel_switch.py: cat(x2, x1); Flow++
    TupleFlip). For an odd channel count the first ceil(C/2) channels move to the end.

    There is no ``split: checkerboard``: on an even width ``split: columns`` already exchanges the
    two checkerboard parities (each square moves to its row neighbour, of the other parity), and
    checkerboard couplings alternate without a swap through ``parity: odd`` (RealNVP Sec. 3.4)."""

    summary = "exchange the two parts of a split"
    equation = "DenseFlow channel_switch.py; Flow++ TupleFlip"
    shape_rule = "shape unchanged; channels: C >= 2; columns: W even"

    name = "swap"
    role = BIJECTION

    class Args(OpArgs):
        split: Literal["channels", "columns"] = Field(default="channels", description=(
            "the split whose two parts are exchanged: channels or columns"))

    def out_shape(self, a, shape, env):
        halves(a.split, shape)
        return shape

    def moves(self, a, shape):
        """Output element k is input element moves[k] (layers/reshape.py:Swap.forward)."""
        c, plane = shape[0], numel(shape[1:])
        if a.split == "columns":
            return [k ^ 1 for k in range(c * plane)]  # (c, i, j) <- (c, i, j xor 1), W even
        c1 = (c + 1) // 2
        return [((ch + c1) % c) * plane + p for ch in range(c) for p in range(plane)]
