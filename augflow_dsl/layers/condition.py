"""The condition y of a conditional model (``condition:`` in the spec): its validation, its
shared embedding, and the per-pass state the conditioned layers read.

A conditional FlowModel owns one :class:`ConditionEmbedding` and one :class:`ConditionState`,
shared by every layer that reads the condition (:class:`ReadsCondition`: a coupling with
``condition: true``, a ``class_normal`` density). The model fills the state around one pass
(``log_prob(x, y)``, ``sample(n, y=...)``) and clears it after, the way :class:`~.base.Draws`
carries the temperature: the plan's step protocol stays ``forward(x, context)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ConditionState:
    """What the conditioned layers of one pass read: ``raw`` [N, K] (the one-hot label) or [N, D]
    (the context vector), read by conditional densities; ``embedded`` [N, E], read by nets. A single
    row (N = 1) conditions every example of a batch."""

    raw: torch.Tensor | None = None
    embedded: torch.Tensor | None = None

    def clear(self) -> None:
        self.raw = self.embedded = None


_NONE = ConditionState()


class ReadsCondition:
    """Mixin of layers that can read the condition; ``reads_condition`` is set by the plan for the
    steps whose op reads it (the graph's edges from the condition node), ``condition_state`` by the
    model that owns them."""

    reads_condition: bool = False
    condition_state: ConditionState = _NONE

    def condition_raw(self, n: int) -> torch.Tensor:
        """The raw condition of this pass ([N, K] one-hot, or [N, D]), checked against the batch size."""
        return _need(self.condition_state.raw, n, type(self).__name__)

    def condition_channels(self, x: torch.Tensor) -> torch.Tensor:
        """The embedded condition as context channels for a net reading ``x``: [N, E] for vectors,
        [N, E, H, W] (broadcast over positions) for images."""
        e = _need(self.condition_state.embedded, x.shape[0], type(self).__name__).to(x.dtype)
        return e if x.dim() == 2 else e[:, :, None, None].expand(-1, -1, *x.shape[2:])


def _need(t: torch.Tensor | None, n: int, who: str) -> torch.Tensor:
    if t is None:
        raise ValueError(f"{who} reads the model's condition y, but this pass has none: call the model with y "
                         "(log_prob(x, y), sample(n, y=...))")
    if t.shape[0] == 1 and n != 1:  # one condition for the whole batch
        return t.expand(n, *t.shape[1:])
    if t.shape[0] != n:
        raise ValueError(f"{who} reads a condition of {t.shape[0]} rows for a batch of {n}")
    return t


class ConditionEmbedding(nn.Module):
    """The spec's condition: validates y and computes (raw, embedded). Labels: raw = one-hot(y, K),
    embedded = a learned K x E table (``embed: E``) or the one-hot itself. Vectors: raw = y,
    embedded = a D -> E linear map or y itself."""

    def __init__(self, classes: int | None, vector: int | None, embed: int | None):
        super().__init__()
        self.classes, self.vector, self.embed = classes, vector, embed
        if embed is not None:
            self.table = nn.Embedding(classes, embed) if classes is not None else nn.Linear(vector, embed)

    @classmethod
    def of(cls, spec) -> "ConditionEmbedding":
        c = spec.condition
        return cls(c.classes, c.vector, c.embed)

    def describe(self) -> str:
        return f"labels 0..{self.classes - 1}" if self.classes is not None else f"context vectors of {self.vector}"

    def check(self, y, n: int | None, like: torch.Tensor) -> torch.Tensor:
        """y as a tensor on ``like``'s device: a LongTensor [n] of labels in 0..K-1, or a float [n, D]
        (``like``'s dtype). For sampling (``n`` given) a single label or one vector is repeated n times.
        Raises ValueError saying what was expected."""
        want = (f"a LongTensor of labels in 0..{self.classes - 1}, shape [N]" if self.classes is not None
                else f"a float tensor of context vectors, shape [N, {self.vector}]")
        if y is None:
            raise ValueError(f"this model is conditional on {self.describe()}: pass y ({want})")
        if self.classes is not None:
            if isinstance(y, bool) or (isinstance(y, torch.Tensor) and y.dtype == torch.bool):
                raise ValueError(f"y must be {want}; got booleans")
            t = torch.as_tensor(y, device=like.device)
            if t.is_floating_point() or t.is_complex():
                if not torch.equal(t, t.round()):
                    raise ValueError(f"y must be {want}; got non-integer values")
            t = t.long()
            if t.dim() == 0 and n is not None:
                t = t.expand(n)
            if t.dim() != 1:
                raise ValueError(f"y must be {want}; got shape {list(t.shape)}")
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.classes):
                raise ValueError(f"y must be {want}; got labels from {int(t.min())} to {int(t.max())}")
        else:
            t = torch.as_tensor(y, device=like.device, dtype=like.dtype)
            if t.dim() == 1 and n is not None and t.shape[0] == self.vector:
                t = t.expand(n, -1)
            if t.dim() != 2 or t.shape[1] != self.vector:
                raise ValueError(f"y must be {want}; got shape {list(t.shape)}")
            if not torch.isfinite(t).all():
                raise ValueError("y holds NaN or infinite values")
        if n is not None and t.shape[0] != n:
            raise ValueError(f"y has {t.shape[0]} rows but {n} are asked for")
        return t

    def forward(self, y: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw, embedded) of a checked y."""
        raw = F.one_hot(y, self.classes).to(dtype) if self.classes is not None else y.to(dtype)
        if self.embed is None:
            return raw, raw
        return raw, self.table(y).to(dtype) if self.classes is not None else self.table(raw)
