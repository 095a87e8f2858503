"""A training run's folder and settings: the options the command line adds to a spec's ``train:``
block, the result a run returns, and the files a run keeps (``runs/<spec>/<UTC time>/`` unless
``--run``)::

    config.json         spec text and hash, overrides, resolved variables and train block, options,
                        versions, world size, seed
    metrics.jsonl       one row per logged step and per evaluation (runtime.metrics)
    checkpoints/last.pt every --checkpoint-every steps, at the end, and on SIGTERM / SIGINT
    checkpoints/best.pt the checkpoint with the best test bits/dim so far
    samples/step-N.png  sample grids at each evaluation
    tb/                 TensorBoard events: metrics rows, sample grids, spec text (runtime.tensorboard)
    curves.png          train and test bits/dim against step
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..compiler.model_file import versions


class TrainError(Exception):
    """A run that cannot start or continue for a reason the user can fix (message says how)."""


@dataclass
class TrainOptions:
    """What the command line adds to a spec's ``train:`` block."""

    run: str | None = None
    steps: int | None = None
    epochs: int | None = None
    batch: int | None = None
    device: str = "cpu"
    precision: str = "fp32"
    compile: bool = False
    data_root: str | None = None
    data: str | None = None            # the user's own data (--data, or the spec's data.path), absolute
    download: bool = False
    seed: int | None = None
    checkpoint_every: int = 1000
    log_every: int = 50
    eval_every: int | None = None      # steps; default: each epoch, at most ~10 times a run (and at the end)
    eval_images: int = 1000            # test images of the in-training evaluation
    final_eval: bool = True            # end a finished run with the IW evaluation (train.eval_samples)
    sample_n: int = 64                 # images in each samples/step-N.png
    max_bad_steps: int = 20
    workers: int = 0
    force: bool = False
    progress: bool = True
    tensorboard: bool = True           # event files in RUN/tb/ (runtime.tensorboard)


@dataclass
class RunResult:
    run: str
    step: int
    epoch: int
    stopped: str                       # "done", "signal SIGTERM", "bad steps"
    train_bpd: float | None = None
    test_bpd: float | None = None
    test_iw_bpd: float | None = None   # the final evaluation's, with train.eval_samples importance samples
    best_bpd: float | None = None
    images_per_s: float | None = None
    seconds: float = 0.0
    checkpoint: str | None = None
    bad_steps: int = 0
    extra: dict = field(default_factory=dict)


class RunFolder:
    """The files of one run (rank 0 alone writes them)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.created: list[Path] = []  # the folders prepare() made, deepest first

    @property
    def last(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "checkpoints" / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    def samples(self, step: int) -> Path:
        return self.path / "samples" / f"step-{step}.png"

    def prepare(self) -> None:
        """Create the folder and check it is writable (TrainError says why not)."""
        self.created = [d for d in (self.path / "checkpoints", self.path / "samples", self.path, *self.path.parents)
                        if not d.exists()]
        try:
            (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
            (self.path / "samples").mkdir(exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise TrainError(f"cannot write the run folder {self.path}: {e.strerror or e}") from None
        self._remove_stale_partials()
        self._refuse_lost_last()

    def _refuse_lost_last(self) -> None:
        """A folder whose best.pt is here but last.pt is gone would silently restart at step 0,
        truncate metrics.jsonl and replace best.pt with a worse model (issue 24): refuse it."""
        if self.best.exists() and not self.last.exists():
            raise TrainError(f"{self.path}: checkpoints/last.pt is missing, though checkpoints/best.pt is here; "
                             f"training would start again at step 0, cut metrics.jsonl and replace best.pt. "
                             f"To continue from the best checkpoint, copy checkpoints/best.pt to checkpoints/last.pt "
                             f"and resume; to start over, train in a new --run folder")

    def _remove_stale_partials(self) -> None:
        """Remove the partial checkpoints (``checkpoints/.last.pt.*.tmp``, written then renamed by
        compiler.model_file) that a kill during a write leaves behind; they are never read."""
        for tmp in (self.path / "checkpoints").glob(".*.pt.*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass

    def discard_if_unused(self) -> None:
        """Remove the folders prepare() made while they hold no file (a run refused before it wrote
        anything leaves nothing behind); a folder with any file in it stays."""
        for d in self.created:
            try:
                d.rmdir()  # only an empty folder goes
            except OSError:
                break
        self.created = []

    def write_config(self, spec, spec_hash: str, overrides: dict, train_overrides: dict, train, opts: TrainOptions,
                     world_size: int) -> None:
        """config.json: what the run was started with (written once, when a run starts)."""
        cfg = {
            "spec_name": spec.name, "spec_file": spec.file, "spec_text": spec.text,
            "spec_hash": spec_hash, "overrides": overrides, "train_overrides": train_overrides,
            "variables": spec.variables, "train": train.model_dump(), "options": asdict(opts),
            "versions": versions(), "world_size": world_size, "seed": train.seed,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        tmp = self.path / "config.json.tmp"
        tmp.write_text(json.dumps(cfg, indent=2, default=str))
        tmp.replace(self.path / "config.json")


__all__ = ["RunFolder", "RunResult", "TrainError", "TrainOptions", "versions"]
