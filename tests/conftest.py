"""Test-session settings: one torch thread per process.

The suite runs many tiny tensor ops; on a 2-core machine torch's default two intra-op threads
spin against each other (and against pytest-xdist's second worker), which makes small ops up to
100x slower. Parallelism comes from ``pytest -n 2`` instead.
"""
try:
    import torch
except ImportError:  # the spec-only tests run without torch
    torch = None

if torch is not None:
    torch.set_num_threads(1)
