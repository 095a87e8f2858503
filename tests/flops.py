"""Test helpers over the package's flop counter (augflow_dsl/compiler/flops.py)."""
from __future__ import annotations

import torch

from augflow_dsl.compiler.flops import count_flops as _count


def count_flops(fn) -> int:
    with torch.no_grad():
        return _count(fn)


def marginal_macs(fn) -> float:
    """MACs per example: (FLOPs at batch 2 - FLOPs at batch 1) / 2 FLOPs per MAC, after one
    uncounted call (values derived from the weights alone, such as a 1x1 conv's W from its LU
    factors, are computed once per weight version and cached)."""
    with torch.no_grad():
        fn(1)
    return (count_flops(lambda: fn(2)) - count_flops(lambda: fn(1))) / 2
