"""What counts as a diverged run (issue 24): a guard against losses that explode through finite
values, which the non-finite check alone lets through (``train.lr=5`` on digits-small climbs to
2e9 and 6e14 nats, all finite, before any gradient overflows).

The rule, in bits/dim (the loss over ``dims * ln 2``): let m be the median of the last
:data:`WINDOW` healthy step losses. A loss L is *diverged* when

    L > m + factor * max(|m|, 1)

that is, more than (1 + factor) times the median, or more than ``factor`` bits/dim above it when
the median is within 1 bit/dim of zero (toy data, whose bits/dim can be negative). ``factor`` is
``--diverge-factor`` (default :data:`FACTOR` = 1: a loss above twice the median). Nothing is judged
before one healthy loss is known. The Trainer applies it twice:

- each step: a diverged loss is a bad step, like a non-finite one: its update is skipped, it is not
  added to the median's window, and ``max_bad_steps`` of them in a row stop the run;
- before each checkpoint: the weights about to be written are scored on the step's own batch (one
  extra forward pass, under a forked RNG with the buffers restored, so the run's bits do not move);
  a diverged score keeps the last good checkpoint and stops the run, naming the step and the rule.

The window is part of the checkpoint, so a resumed run judges exactly as an unbroken one.
"""
from __future__ import annotations

import math
import statistics
from collections import deque

import torch

LN2 = math.log(2)
FACTOR = 1.0
WINDOW = 100


class DivergenceGuard:
    """The running median of healthy step losses (nats per example) and the limit above it."""

    def __init__(self, dims: int, factor: float = FACTOR, window: int = WINDOW):
        self.dims, self.factor = dims, float(factor)
        self.history: deque[float] = deque(maxlen=window)

    def _bpd(self, loss: float) -> float:
        return loss / (self.dims * LN2)

    def limit_bpd(self) -> float | None:
        """The largest healthy loss in bits/dim, or None while no loss is known."""
        if not self.history:
            return None
        m = self._bpd(statistics.median(self.history))
        return m + self.factor * max(abs(m), 1.0)

    def diverged(self, loss: float) -> bool:
        """Whether the (finite) loss ``loss``, in nats, is above the limit."""
        lim = self.limit_bpd()
        return lim is not None and self._bpd(loss) > lim

    def observe(self, loss: float) -> bool:
        """Judge one step's finite loss; a healthy one joins the window. True when diverged."""
        if self.diverged(loss):
            return True
        self.history.append(float(loss))
        return False

    def verdict(self, loss: float) -> str:
        """``L bits/dim > limit`` and the rule, for messages."""
        return (f"loss {self._bpd(loss):.4g} bits/dim > limit {self.limit_bpd():.4g} (the rule: above median "
                f"m + {self.factor:g} * max(|m|, 1) of the last {len(self.history)} healthy losses, "
                f"m = {self._bpd(statistics.median(self.history)):.4g}; --diverge-factor sets {self.factor:g})")

    def state_dict(self) -> dict:
        return {"history": list(self.history), "factor": self.factor}

    def load_state_dict(self, state: dict | None) -> None:
        self.history.clear()
        for v in (state or {}).get("history", []):
            self.history.append(float(v))


def check_loss(model: torch.nn.Module, x, y, world) -> float:
    """The loss of ``model``'s current weights on batch (x, y), leaving every bit of the run's
    state as it was: no gradient, the RNGs forked, the buffers (BatchNorm statistics) restored."""
    from . import batches
    from . import distributed as D

    saved = [b.detach().clone() for b in model.buffers()]
    devices = [world.device] if world.device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            loss = -batches.score(model, x, y).mean()
    finally:
        with torch.no_grad():
            for b, s in zip(model.buffers(), saved):
                b.copy_(s)
    return float(D.all_mean(loss.detach().float().reshape(1), world)[0])


__all__ = ["DivergenceGuard", "FACTOR", "WINDOW", "check_loss"]
