"""Every generator a training step draws from, captured and restored for bit-exact resume, and seeded
per rank."""
from __future__ import annotations

import random

import numpy as np
import torch


def capture_rng() -> dict:
    """Every generator a training step may draw from (torch CPU and CUDA, numpy, python)."""
    st = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": st[0], "key": torch.from_numpy(st[1].astype(np.int64)), "pos": int(st[2]),
                  "has_gauss": int(st[3]), "gauss": float(st[4])},
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def seed_everything(seed: int, rank: int) -> None:
    """Seed each rank's global generators (seed + rank): what they still drive is the initial weights
    (rank 0's are broadcast) and anything outside a training pass; the passes' own noise is
    per-example (runtime.noise), the same on any number of ranks."""
    s = seed + 1_000_003 * rank
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)


__all__ = ["capture_rng", "restore_rng", "seed_everything"]
