"""The model's boundary: what ``log_prob`` and friends accept, refused with a ValueError that
says what was expected (never a silently wrong number).

* a torch.Tensor (a numpy array is converted; anything else is refused), real-valued;
* shape [N, *data shape] with N >= 1;
* for data with ``bits``: integral values in 0 .. 2^bits - 1, in any integer or float dtype.
  Floats in [0, 1] with fractions (torchvision ToTensor's convention) get a hint.

The value checks cost one fused reduction and one host read per batch.
"""
from __future__ import annotations

import torch


def as_batch(x, shape: tuple[int, ...], bits: int | None, name: str, dtype: torch.dtype) -> torch.Tensor:
    """``x`` checked against the data's ``shape`` and ``bits`` and cast to ``dtype``."""
    want = "x".join(map(str, shape))
    if not isinstance(x, torch.Tensor):
        if type(x).__module__ == "numpy" and hasattr(x, "dtype"):
            x = torch.from_numpy(x)
        else:
            raise ValueError(f"{name}: expected a torch.Tensor (or numpy array) [N, {want}]; got {type(x).__name__}")
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{name}: expected real numbers; got a {x.dtype} tensor")
    if x.dim() < 1 or tuple(x.shape[1:]) != tuple(shape) or x.shape[0] < 1:
        raise ValueError(f"{name}: expected a batch [N, {want}] with N >= 1; got {list(x.shape)}")
    if bits is not None:
        _check_levels(x, bits, name)
    return x.to(dtype)


def _check_levels(x: torch.Tensor, bits: int, name: str) -> None:
    top = 2 ** bits - 1
    if x.is_floating_point():
        bad = ((x < 0) | (x > top) | (x != torch.floor(x))).any()
    else:
        bad = ((x < 0) | (x > top)).any()
    if not bool(bad):
        return
    lo, hi = x.min().item(), x.max().item()
    expected = f"{name}: expected integer data in 0 .. {top} ({bits} bits)"
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{expected}; got non-finite values")
    if x.is_floating_point() and bool((x != torch.floor(x)).any()):
        hint = ""
        if lo >= 0 and hi <= 1:
            hint = (f" -- values in [0, 1] look like torchvision's ToTensor scaling; pass the integers "
                    f"(e.g. (x * {top}).round(), or PILToTensor)")
        raise ValueError(f"{expected}; got fractional values (range {lo:g} .. {hi:g}){hint}")
    raise ValueError(f"{expected}; got values from {lo:g} to {hi:g}")
