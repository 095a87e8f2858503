"""torch's flop counter, taught the CPU attention kernel it does not know.

FlopCounterMode has no entry for ``aten._scaled_dot_product_flash_attention_for_cpu``, the
kernel ``scaled_dot_product_attention`` runs on CPU; it is counted with torch's own formula.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return sdpa_flop_count(query_shape, key_shape, value_shape)


CUSTOM = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop}


def count_flops(fn) -> int:
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=CUSTOM) as counter:
        fn()
    return counter.get_total_flops()


def marginal_macs(fn) -> float:
    """MACs per example: (FLOPs at batch 2 - FLOPs at batch 1) / 2 FLOPs per MAC, after one
    uncounted call (values derived from the weights alone, such as a 1x1 conv's W from its LU
    factors, are computed once per weight version and cached)."""
    with torch.no_grad():
        fn(1)
    return (count_flops(lambda: fn(2)) - count_flops(lambda: fn(1))) / 2
