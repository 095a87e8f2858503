"""Arithmetic of a model's work, for ``bench --flops``: FLOPs counted by torch's flop counter
(matrix products, convolutions, attention) and this machine's float32 matrix-multiply rate,
so a timing can be read as a fraction of what the hardware does at best.

torch's FlopCounterMode has no entry for ``aten._scaled_dot_product_flash_attention_for_cpu``,
the kernel ``scaled_dot_product_attention`` runs on CPU; it is counted with torch's own formula.
Element-wise work (activations, log-dets, the mixture CDF) is not counted: the figure is the
work a roofline bounds by the matrix units.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return sdpa_flop_count(query_shape, key_shape, value_shape)


CUSTOM = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix products, convolutions and attention that ``fn()`` runs (its
    backward too, when ``fn`` calls one); gradients stay as ``fn`` sets them."""
    with FlopCounterMode(display=False, custom_mapping=CUSTOM) as counter:
        fn()
    return counter.get_total_flops()


def gemm_rate(device: str = "cpu", n: int = 2048, repeats: int = 5,
              dtype: torch.dtype = torch.float32) -> float:
    """This machine's n x n matrix-multiply rate in GFLOP/s (median of ``repeats`` after one
    warm-up), on the threads torch uses now: the roof the model's timings are read against."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times) / 1e9
