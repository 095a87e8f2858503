"""Tensor-side splits matching :func:`augflow_dsl.ops.shapes.halves`."""
from __future__ import annotations

import torch


def split(x: torch.Tensor, how: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(identity part, transformed part). channels: first ceil(C/2) | rest; columns: even | odd."""
    if how == "channels":
        c1 = (x.shape[1] + 1) // 2
        return x[:, :c1], x[:, c1:]
    if how == "columns":
        return x[..., 0::2], x[..., 1::2]
    raise ValueError(f"split '{how}' is mask-based or unknown")


def merge(x1: torch.Tensor, x2: torch.Tensor, how: str) -> torch.Tensor:
    if how == "channels":
        return torch.cat([x1, x2], 1)
    if how == "columns":
        return torch.stack([x1, x2], -1).flatten(-2)
    raise ValueError(f"split '{how}' is mask-based or unknown")


def checkerboard(h: int, w: int, like: torch.Tensor, parity: str = "even") -> torch.Tensor:
    """1 where (i + j) has ``parity`` (the identity part: even, RealNVP's first mask, or odd), shape
    [1, 1, H, W]; ops/regions.py:split_parts gives the audit the same squares."""
    i = torch.arange(h, device=like.device).view(-1, 1)
    j = torch.arange(w, device=like.device).view(1, -1)
    return ((i + j) % 2 == (1 if parity == "odd" else 0)).to(like.dtype).view(1, 1, h, w)
