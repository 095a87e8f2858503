"""The typed spec: pydantic models at the boundary between the language and the pipeline.

A :class:`Spec` is what every later stage reads (graph, check, compile, runtime). Ops appear
as :class:`~augflow_dsl.ops.registry.OpCall` (op name + validated arguments + location);
q-networks as :class:`~augflow_dsl.ops.registry.QFlow`.
"""
from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..ops.registry import OpCall


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


MAX_DATA_VALUES = 2**24  # values per example (3 x 2048 x 2048 fits): `check` audits every one of them


class DataSpec(_Model):
    """``data: {shape: [3, 32, 32], bits: 8, dataset: cifar10}``; ``bits`` absent for continuous data.
    ``path`` is the image folder or .npz file of ``dataset: folder`` / ``npz`` (relative to the spec
    file); ``labels: true`` makes the loader yield (x, y) pairs (docs/data.md)."""

    shape: tuple[int, ...]
    bits: int | None = Field(default=None, ge=1, le=16)
    dataset: str | None = None
    path: str | None = None
    labels: bool = False

    @field_validator("shape", mode="before")
    @classmethod
    def _whole_sizes(cls, v):
        # before pydantic's lax int(): `shape: [1, 8, 1e18]` or `8.0` is not a size
        bad = [s for s in v if isinstance(s, bool) or not isinstance(s, int)] if isinstance(v, (list, tuple)) else []
        if bad:
            raise ValueError(f"every size in shape must be a whole number; got {bad[0]!r}")
        return v

    @field_validator("shape")
    @classmethod
    def _shape(cls, v):
        if any(s > MAX_DATA_VALUES for s in v) or math.prod(v) > MAX_DATA_VALUES:
            raise ValueError(f"an example may hold at most 2^24 = {MAX_DATA_VALUES:,} values; got {list(v)}")
        if len(v) not in (1, 3):
            raise ValueError(f"shape must be [C, H, W] or [D]; got {list(v)}")
        if any(s <= 0 for s in v):
            raise ValueError(f"every size in shape must be positive; got {list(v)}")
        return v

    @property
    def dims(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


class ConditionSpec(_Model):
    """``condition: {classes: K}`` (a label in 0..K-1) or ``condition: {vector: D}`` (a context
    vector of D floats): what a conditional model's ``y`` is. ``embed: E`` gives the width of the
    learned embedding the conditioned coupling nets read (a K x E table for labels, a D -> E linear
    map with bias for vectors), shared by every net that reads the condition; without it the nets
    read the one-hot label (K channels) or the vector itself (D channels). Class-conditional priors
    (``class_normal``) always read the one-hot label or the raw vector (Glow's ``ycond``)."""

    classes: int | None = Field(default=None, ge=2, le=100_000)
    vector: int | None = Field(default=None, ge=1, le=100_000)
    embed: int | None = Field(default=None, ge=1, le=100_000)

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.classes is None) == (self.vector is None):
            raise ValueError("give exactly one of 'classes: K' (a label) or 'vector: D' (a context vector)")
        return self

    @property
    def width(self) -> int:
        """Features of the raw condition: K (one-hot label) or D (context vector)."""
        return self.classes if self.classes is not None else self.vector

    @property
    def net_width(self) -> int:
        """Channels the conditioned nets read: the embedding's width, or the raw condition's."""
        return self.embed if self.embed is not None else self.width

    @property
    def embed_params(self) -> int:
        """Parameters of the shared embedding: K x E (labels), D x E + E (vectors), 0 without one."""
        if self.embed is None:
            return 0
        return self.classes * self.embed if self.classes is not None else (self.vector + 1) * self.embed


class TrainSpec(_Model):
    """Settings the training runtime reads (``train: {...}``); the schedule they define is
    :func:`augflow_dsl.runtime.lr_at`. ``decay_after`` counts the unit of ``decay_every``
    (steps or epochs); ``steps``, when given, replaces ``epochs``; ``ema`` is the EMA decay (None:
    no EMA), and ``ema_warmup`` (default true) applies TensorFlow's ``num_updates`` rule to it, decay
    min(ema, (1 + n) / (10 + n)) at update n (runtime.ema): without it an EMA of a short run lags the
    weights by about 1 / (1 - ema) updates (digits-small, 0.99, step 69: 4.44 bits/dim against 3.76 raw,
    3.86 with the rule; examples/ema_vs_raw.py). From update 9 ema / (1 - ema) on (8,990 for the
    papers' 0.999) the decay is ``ema`` itself and what the rule changed fades as ema^k, so a long run
    ends with the reference code's plain EMA; ``ema_warmup: false`` is the plain one throughout.
    ``ema_bn_batches``: before the EMA weights are evaluated, sampled or checkpointed, their BatchNorm
    statistics are measured anew on this many training batches (``update_bn``; runtime.ema); 0 keeps
    the live model's statistics; specs without BatchNorm skip it. It costs that many forward passes without
    gradients (about a third of a training step each) at each evaluation and checkpoint. ``clip`` is the
    gradient-norm bound; ``init_batch`` the images of the data-dependent init; ``augment`` a list of
    ``flip`` and ``translate`` (DenseFlow's, reference-facts).
    ``eval_samples`` is the number of importance samples S of the model's reported test figure:
    ``train`` ends a run that reaches its last step with one importance-weighted evaluation with S
    samples on the in-training evaluation's test images (a metrics row with ``"samples": S``, the
    summary's "final test bits/dim"; S = 1 skips it), and ``sweep`` scores each trained point with it
    unless ``--samples`` is given (``eval --samples S`` gives that figure for any run). The periodic
    in-training evaluations stay one-sample ELBO bits/dim (``"samples": 1``): they pick ``best.pt``
    and draw the curves, and S of 1000-4096 on each would cost more than the training."""

    optimizer: Literal["adam", "adamax", "adamw"] = "adam"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    batch: int = Field(default=64, gt=0)
    epochs: int = Field(default=10, ge=0)
    steps: int | None = Field(default=None, ge=0)
    warmup: int = Field(default=0, ge=0)
    decay: float = Field(default=1.0, gt=0, le=1)
    decay_every: Literal["epoch", "step"] = "epoch"
    decay_after: int = Field(default=0, ge=0)
    lr_min: float = Field(default=0.0, ge=0)
    ema: float | None = Field(default=None, ge=0, lt=1)
    ema_warmup: bool = True
    ema_bn_batches: int = Field(default=32, ge=0)
    clip: float | None = Field(default=None, gt=0)
    init_batch: int = Field(default=64, gt=0)
    finetune_epochs: int = Field(default=0, ge=0)
    finetune_lr: float | None = Field(default=None, gt=0)
    eval_samples: int = Field(default=1, gt=0)
    augment: list[Literal["flip", "translate"]] = Field(default_factory=list)
    seed: int = 0

    def merged(self, overrides: dict[str, Any] | None = None, *, batch: int | None = None,
               steps: int | None = None, epochs: int | None = None, seed: int | None = None) -> "TrainSpec":
        """These settings with ``train.KEY`` overrides (``--set train.lr=...``) and the run flags
        on top: the one place where a run's training settings are put together (train, sweep,
        the memory estimate). ``steps`` / ``epochs`` give the run's whole length: the fine-tune
        phase (DenseFlow's 20 epochs at 2e-5) then runs only when ``finetune_epochs`` is
        overridden. Raises ValueError naming each bad key (``train.lr: ...``)."""
        over = dict(overrides or {})
        merged = {**self.model_dump(), **over}
        if batch is not None:
            merged["batch"] = batch
        if steps is not None:
            merged["steps"], merged["epochs"] = steps, 0
        elif epochs is not None:
            merged["epochs"], merged["steps"] = epochs, None
        if (steps is not None or epochs is not None) and "finetune_epochs" not in over:
            merged["finetune_epochs"] = 0
        if seed is not None:
            merged["seed"] = seed
        try:
            return TrainSpec.model_validate(merged)
        except ValidationError as e:
            raise ValueError(validation_message(e)) from None


def validation_message(e: ValidationError) -> str:
    """A pydantic error on train settings as ``train.KEY: message; ...``."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        msg = "unknown key" if err.get("type") == "extra_forbidden" else err.get("msg", "")
        parts.append(f"train.{loc}: {msg}")
    return "; ".join(parts)


class Definition(_Model):
    """A named definition (``module``, ``net`` or ``q``) and whether anything used it."""

    kind: str
    name: str
    params: tuple[str, ...] = ()
    line: int | None = None
    column: int | None = None
    used: bool = False


class Spec(_Model):
    """A loaded, evaluated, validated .flow spec."""

    name: str
    file: str = "<string>"
    text: str = ""
    variables: dict[str, Any] = Field(default_factory=dict)
    data: DataSpec
    dequantize: OpCall | None = None
    augment: OpCall | None = None
    stages: list[OpCall]
    prior: OpCall
    condition: ConditionSpec | None = None
    train: TrainSpec = Field(default_factory=TrainSpec)
    definitions: dict[str, Definition] = Field(default_factory=dict)
    warnings: list[Any] = Field(default_factory=list)  # errors.SpecError with kind="warning"
