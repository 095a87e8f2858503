"""One training update's parts outside the loop: backpropagation with gradient clipping, the hooks a
Trainer calls around each update, and the checks on a model's state (initialised mirrors, replica
divergence)."""
from __future__ import annotations

import torch


class TrainHooks:
    """Callbacks the Trainer calls around each update; these defaults do nothing. Instrumentation
    and tests (the runtime's fault injection: NaN losses, poisoned weights, a SIGKILL or a signal
    at a given update) pass a subclass as ``Trainer(hooks=...)`` or monkeypatch these methods.

    ``step`` is the number of updates done before this one in :meth:`loss` and
    :meth:`after_update`, and the number done including it in :meth:`after_step`."""

    def loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        """The loss to backpropagate (called after the forward pass)."""
        return loss

    def after_update(self, step: int, model: torch.nn.Module, params: list[torch.Tensor]) -> None:
        """Called after an applied (finite) update, before the step is counted."""

    def after_step(self, step: int) -> None:
        """Called once the step is counted and logged, before its evaluation and checkpoint."""


def backward_and_clip(loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
                      clip: float | None) -> torch.Tensor:
    """A training step up to the optimizer's update: zero the gradients, backpropagate ``loss``,
    clip the gradients' total norm to ``clip`` (None: no clipping). Returns the norm before
    clipping. (examples/bench_memory_estimate.py measures a step made of the same calls.)"""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if clip is not None:
        torch.nn.utils.clip_grads_with_norm_(params, clip, gnorm)
    return gnorm


def mark_initialized(model: torch.nn.Module) -> None:
    """After a broadcast or a load, refresh the Python-side 'initialised' mirrors from the buffers."""
    from ..layers.base import InitOnce
    for m in model.modules():
        if isinstance(m, InitOnce) and hasattr(m, "initialized"):
            m._done = bool(m.initialized)


def all_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def rank_divergence(model, world) -> float:
    """The largest |p - p_rank0| over every parameter: 0 when DDP kept the replicas identical."""
    worst = torch.zeros((), device=world.device)
    for p in model.parameters():
        ref = p.detach().clone()
        torch.distributed.broadcast(ref, src=0)
        worst = torch.maximum(worst, (p.detach() - ref).abs().max())
    torch.distributed.all_reduce(worst, op=torch.distributed.ReduceOp.MAX)
    return float(worst)


__all__ = ["TrainHooks", "all_finite", "backward_and_clip", "mark_initialized", "rank_divergence"]
