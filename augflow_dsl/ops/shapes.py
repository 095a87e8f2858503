"""Shape helpers shared by op definitions (pure Python).

A shape is (C, H, W) for images or (D,) for vectors, batch dimension excluded.
"""
from __future__ import annotations

from math import prod
from typing import Literal

from .registry import OpShapeError, Shape

Split = Literal["channels", "columns", "checkerboard"]
Parity = Literal["even", "odd"]  # a checkerboard's unchanged squares: i + j even (RealNVP's first mask) or odd


def numel(shape: Shape) -> int:
    return prod(shape)


def is_image(shape: Shape) -> bool:
    return len(shape) == 3


def need_image(shape: Shape, what: str) -> None:
    if not is_image(shape):
        raise OpShapeError(f"{what} needs an image (C, H, W); got {fmt(shape)}"
                           + ("; use `split: channels` for vector data" if "split" in what else ""))


def fmt(shape: Shape) -> str:
    return "x".join(str(s) for s in shape)


def fmt_count(n: int) -> str:
    """A large count for reports: ``1.23 G``, ``45.60 M``, else with thousands separators."""
    if n >= 10**9:
        return f"{n / 1e9:.2f} G"
    if n >= 10**6:
        return f"{n / 1e6:.2f} M"
    return f"{n:,}"


def halves(split: str, shape: Shape, equal: bool = False) -> tuple[Shape, Shape]:
    """The shapes of the two parts of a split: (identity part, transformed part).

    channels: the first ceil(C/2) channels condition the last floor(C/2) (DenseFlow
    affine_coupling.py:44-49); columns: even columns condition odd ones (the Flow++
    code's "checkerboard", flows.py:294-301); checkerboard: a 2-D checkerboard mask of
    RealNVP, where both parts keep the full shape and a mask selects the elements.
    ``equal`` demands two parts of the same shape (per-half 1x1 convs, Flow++ nets).
    """
    if split == "channels":
        c = shape[0]
        if c < 2:
            raise OpShapeError(f"a channel split needs at least 2 channels; got {c}"
                               + ("; use `split: columns` or `split: checkerboard`, or squeeze first (4x the "
                                  "channels)" if is_image(shape) else "; vector data needs at least 2 features"))
        if equal and c % 2:
            raise OpShapeError(f"a channel split into equal halves needs an even channel count; got {c}"
                               + ("; use `split: columns`, or make the channel count even (squeeze first, or "
                                  "augment to an even count)" if is_image(shape) else "; use an even number of "
                                  "features (augment: input(channels: ...) can add one)"))
        c1 = (c + 1) // 2
        return (c1, *shape[1:]), (c - c1, *shape[1:])
    if split == "columns":
        need_image(shape, "a column split")
        c, h, w = shape
        if w % 2:
            raise OpShapeError(f"a column split needs an even width; width {w} is odd; use `split: channels`")
        return (c, h, w // 2), (c, h, w // 2)
    if split == "checkerboard":
        need_image(shape, "a checkerboard split")
        c, h, w = shape
        if h * w < 2:
            raise OpShapeError(f"a checkerboard split needs at least 2 positions; got {h}x{w}; use "
                               f"`split: channels`")
        return shape, shape
    raise OpShapeError(f"unknown split '{split}'")


def spatial(shape: Shape) -> tuple[int, int]:
    return (shape[1], shape[2]) if is_image(shape) else (0, 0)
