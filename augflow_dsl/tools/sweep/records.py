"""The sweep's records at its JSON boundary (``sweep.json``, ``results.jsonl`` / ``results.json``), the
flags that define its results, and its errors."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

FORMAT = "augflow-dsl-sweep"

Status = Literal["done", "invalid", "pending", "failed", "queued", "running", "interrupted"]  # the last 3: jobs


# ---------------------------------------------------------------------------------- JSON boundary
class SweepConfig(BaseModel):
    """``sweep.json``: what defines the sweep's results (refused if changed) and how it was started."""

    format: str = FORMAT
    version: int = 1
    spec_file: str
    spec_name: str
    spec_hash: str
    spec_text: str
    axes: dict[str, list[Any]]
    fixed: dict[str, Any]
    train: dict[str, Any]            # steps, epochs, batch, seed, precision, data (None: the spec's)
    samples: int | None              # importance samples of the evaluation (None: the spec's eval_samples)
    options: dict[str, Any] = Field(default_factory=dict)   # may change on a rerun (device, data root, ...)
    created: str = ""

    def identity(self) -> dict[str, Any]:
        return {"spec": self.spec_hash, "axes": self.axes, "fixed": self.fixed, "train": self.train,
                "samples": self.samples}


class PointResult(BaseModel):
    """One point of the grid: its settings, parameter count, status and figures."""

    name: str
    settings: dict[str, Any]
    run: str
    status: Status
    parameters: int | None = None
    error: str | None = None
    steps: int | None = None
    epochs: int | None = None
    resumed_from: int | None = None
    train_seconds: float | None = None
    train_bpd: float | None = None
    weights: str | None = None
    n: int | None = None
    samples: int | None = None
    elbo_bpd: float | None = None
    elbo_se: float | None = None
    iw_bpd: float | None = None
    iw_se: float | None = None
    eval_seconds: float | None = None


class SweepResult(BaseModel):
    """What ``--json`` prints and ``results.json`` holds."""

    sweep: str
    spec: str
    axes: dict[str, list[Any]]
    fixed: dict[str, Any]
    stopped: str | None = None       # "signal SIGINT" when a signal stopped the sweep
    points: list[PointResult]


# the train flags that define a sweep's results (refused if changed), and those that may change on a rerun
IDENTITY_FLAGS = ("steps", "epochs", "batch", "seed", "precision", "data")
OPTION_FLAGS = ("device", "data_root", "download", "compile", "checkpoint_every", "log_every", "eval_every",
                "eval_images", "workers", "threads", "tensorboard")


class SweepUsageError(Exception):
    """A malformed sweep (exit 2): a bad grid, flags that --resume refuses, an unknown device."""


class SweepError(Exception):
    """A sweep folder that cannot be used (exit 1)."""


class Stopped(BaseException):
    """Raised by the sweep's signal handler outside the Trainer's loop (a BaseException, so that no
    ``except Exception`` on the way swallows it)."""
