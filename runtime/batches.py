"""A batch is the data x, or (x, y) with the labels or context vectors of a labelled data set
(``data: {labels: true}``, or any data set feeding a conditional spec): one place that tells them
apart and moves them, so the training loop, the evaluation and the init read both the same way."""
from __future__ import annotations

from collections.abc import Sequence

import torch

Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def split(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, y) of a batch; y is None for unlabelled data."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, torch.Tensor) for t in batch):
        return batch[0], batch[1]
    raise TypeError(f"a batch is a tensor or an (x, y) pair of tensors; got {type(batch).__name__}")


def stack(items: Sequence) -> Batch:
    """Items of a Dataset (tensors, or (x, y) pairs) stacked into one batch of the same kind."""
    items = list(items)
    if items and isinstance(items[0], (tuple, list)):
        return torch.stack([x for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])
    return torch.stack(items)


def to(batch, device) -> Batch:
    x, y = split(batch)
    return x.to(device) if y is None else (x.to(device), y.to(device))


def score(model, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """log p(x), or log p(x | y) for a conditional model; labels given to an unconditional model are
    not passed (a labelled data set can train an unconditional spec)."""
    if y is None or not getattr(model, "conditional", getattr(getattr(model, "module", None), "conditional", False)):
        return model(x)
    return model(x, y)
