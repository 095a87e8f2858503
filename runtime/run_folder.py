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
    .lock               the pid and host of the process training in the folder (runtime.run_lock)

What is read back is validated before use (issue 24): config.json (:func:`read_config`) and the
options (:class:`TrainOptions`) field by field, a checkpoint to resume (:func:`check_resume`), and
a write that fails (a full disk, a quota, a lost permission) stops the run cleanly, naming the path,
the free space and the last good checkpoint (:class:`WriteFailed`).
"""
from __future__ import annotations

import errno
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveInt, ValidationError

from ..compiler.model_file import ModelFileError, versions
from .run_lock import RunLock


class TrainError(Exception):
    """A run that cannot start or continue for a reason the user can fix (message says how)."""


class WriteFailed(TrainError):
    """A checkpoint or metrics write that failed (full disk, quota, permission): a clean stop."""


def write_failed(path: str | Path, err: OSError, run: str | Path) -> WriteFailed:
    """The clean stop for an OSError writing ``path`` in run folder ``run``: what failed, the free
    space on that disk, and the last good checkpoint (kept: checkpoints are written atomically)."""
    path = Path(path)
    where = next((d for d in (path.parent, *path.parents) if d.exists()), Path("."))
    try:
        free = f"{shutil.disk_usage(where).free / 2**20:.1f} MiB free on its disk"
    except OSError:
        free = "free space unknown"
    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded"}.get(
        err.errno, err.strerror or str(err))
    last = Path(run) / "checkpoints" / "last.pt"
    kept = (f"the last good checkpoint {last} is kept; free some space, then resume with "
            f"'augflow-dsl train --resume {run}'" if last.exists() else "no checkpoint had been written yet")
    return WriteFailed(f"cannot write {path}: {why} ({free}); training stopped: {kept}")


_DEVICE = r"^(cpu|mps|cuda(:[0-9]+)?)$"


class _Options(BaseModel):
    """The checks on :class:`TrainOptions` (and config.json's ``options``), field by field."""
    model_config = ConfigDict(extra="ignore")
    run: Optional[str] = None
    steps: Optional[PositiveInt] = None
    epochs: Optional[PositiveInt] = None
    batch: Optional[PositiveInt] = None
    device: Optional[str] = Field(None, pattern=_DEVICE)
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    data_root: Optional[str] = None
    data: Optional[str] = None
    download: bool = False
    seed: Optional[int] = None
    checkpoint_every: PositiveInt = 1000
    log_every: PositiveInt = 50
    eval_every: Optional[PositiveInt] = None
    eval_images: PositiveInt = 1000
    eval_raw: bool = False
    final_eval: bool = True
    sample_n: NonNegativeInt = 64
    max_bad_steps: PositiveInt = 20
    workers: NonNegativeInt = 0
    force: bool = False
    progress: bool = True
    tensorboard: bool = True
    threads: Optional[PositiveInt] = None
    diverge_factor: float = Field(1.0, gt=0)


def _field_errors(e: ValidationError, prefix: str = "") -> str:
    """'field' = value: reason; ... (the first three of a pydantic error)."""
    out = []
    for err in e.errors()[:3]:
        name = prefix + ".".join(str(x) for x in err["loc"])
        value = f" = {err['input']!r}" if "input" in err and not isinstance(err["input"], dict) else ""
        msg = "should be cpu, cuda, cuda:N or mps" if _DEVICE in err["msg"] else err["msg"]
        out.append(f"'{name}'{value}: {msg}")
    return "; ".join(out)


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
    eval_raw: bool = False             # with an EMA: evaluate the raw weights too (rows "alongside": "ema")
    final_eval: bool = True            # end a finished run with the IW evaluation (train.eval_samples)
    sample_n: int = 64                 # images in each samples/step-N.png
    max_bad_steps: int = 20
    workers: int = 0
    force: bool = False
    progress: bool = True
    tensorboard: bool = True           # event files in RUN/tb/ (runtime.tensorboard)
    threads: int | None = None         # torch threads; recorded in config.json, set again on resume
    diverge_factor: float = 1.0        # the divergence rule's factor (runtime.divergence)

    def __post_init__(self) -> None:
        """Check every field (TrainError names the first bad ones), e.g. ``checkpoint_every: 0``,
        ``log_every: "abc"``, ``device: "tpu:9"``; values such as "5" become 5."""
        try:
            good = _Options.model_validate(asdict(self))
        except ValidationError as e:
            raise TrainError(f"option {_field_errors(e)}") from None
        for k, v in good.model_dump().items():
            setattr(self, k, v)


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
        self.lock = RunLock(self.path, TrainError)

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

    def prepare(self) -> str | None:
        """Create the folder, check that it and checkpoints/ can be written (a probe file created
        and removed in each, so an unwritable checkpoints/ is refused before the first step, not
        after the steps have run), and take the run's lock (runtime.run_lock) until
        :meth:`release`. TrainError says what is wrong; returns a note when a stale lock was
        replaced."""
        self.created = [d for d in (self.path / "checkpoints", self.path / "samples", self.path, *self.path.parents)
                        if not d.exists()]
        try:
            (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
            (self.path / "samples").mkdir(exist_ok=True)
        except OSError as e:
            raise TrainError(f"cannot write the run folder {self.path}: {e.strerror or e}") from None
        for where in (self.path, self.path / "checkpoints"):
            probe = where / f".write-test.{os.getpid()}"
            try:
                os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                os.unlink(probe)
            except OSError as e:
                what = "the run folder" if where == self.path else "the checkpoint folder"
                raise TrainError(f"cannot write {what} {where}: {e.strerror or e}; nothing was trained") from None
        note = self.lock.acquire()
        try:
            self._remove_stale_partials()
            self._refuse_lost_last()
        except BaseException:
            self.release()
            raise
        return note

    def prepare_ranks(self, world, say=None) -> None:
        """:meth:`prepare` on rank 0, every rank told whether it worked (one collective), so that
        a refused rank 0 (a locked or unwritable folder) never leaves the other ranks waiting in a
        later collective; ``say`` prints a replaced stale lock's note."""
        from . import distributed as D

        failed: BaseException | None = None
        if world.main:
            try:
                note = self.prepare()
                if note and say is not None:
                    say(f"{self.path}: {note}")
            except Exception as e:  # noqa: BLE001 - re-raised below, after the other ranks know
                failed = e
        if D.any_rank(failed is not None, world):
            if failed is not None:
                raise failed
            raise TrainError(f"rank 0 could not prepare the run folder {self.path} (its message says why)")

    def release(self) -> None:
        """Drop the run's lock (no-op when not held)."""
        self.lock.release()

    def save_checkpoint(self, state: dict, also_best: bool = False) -> None:
        """last.pt (and best.pt) from ``state`` (compiler.model_file.save_trained, atomic); an
        OSError (full disk, quota, permission) becomes :class:`WriteFailed`."""
        from ..compiler.model_file import save_trained

        for path in (self.last, self.best) if also_best else (self.last,):
            try:
                save_trained(path, state)
            except OSError as e:
                raise write_failed(path, e, self.path) from None

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
        self.release()
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
        try:
            tmp.write_text(json.dumps(cfg, indent=2, default=str))
            tmp.replace(self.path / "config.json")
        except OSError as e:
            raise write_failed(self.path / "config.json", e, self.path) from None


# ----------------------------------------------------------------------------- what is read back
class _Config(BaseModel):
    """config.json, as :meth:`RunFolder.write_config` writes it (what resuming reads)."""
    model_config = ConfigDict(extra="allow")
    spec_text: str
    spec_file: Optional[str] = None
    overrides: dict[str, Any] = {}
    train_overrides: dict[str, Any] = {}
    options: _Options = _Options()
    world_size: PositiveInt = 1
    seed: Optional[int] = None
    changes: list[dict[str, Any]] = []  # what later resumes changed, in order (runtime.launch)


def read_config(path: str | Path) -> dict:
    """config.json at ``path``, every field checked (TrainError names the file and the field): the
    JSON object as written, with ``options`` holding only known, valid options."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise TrainError(f"{path}: cannot read: {e.strerror or e}") from None
    except ValueError as e:
        raise TrainError(f"{path}: not valid JSON ({e}); the run's config is damaged") from None
    if not isinstance(raw, dict):
        raise TrainError(f"{path}: holds a {type(raw).__name__}, not a JSON object; the run's config is damaged")
    try:
        _Config.model_validate(raw)
    except ValidationError as e:
        raise TrainError(f"{path}: {_field_errors(e)}") from None
    given = raw.get("options") or {}
    return {**raw, "options": {k: v for k, v in given.items() if k in TrainOptions.__dataclass_fields__}}


class _OptimizerState(BaseModel):
    state: dict
    param_groups: list[dict] = Field(min_length=1)


class _ResumeState(BaseModel):
    """The fields of a "trained" checkpoint that resuming reads (compiler.model_file)."""
    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)
    model: dict
    ema: Optional[dict] = None
    optimizer: _OptimizerState
    rng: list = Field(min_length=1)
    step: NonNegativeInt
    epoch: NonNegativeInt
    position: NonNegativeInt
    world_size: PositiveInt = 1
    best_bpd: Optional[float] = None
    elapsed: NonNegativeFloat = 0.0
    train: Optional[dict] = None


def check_resume(ckpt: dict | None, path: str | Path, steps_per_epoch: int, spec_hash: str | None = None) -> None:
    """Refuse a checkpoint that cannot be resumed, naming the file and the field
    (ModelFileError): a missing or ill-typed field (``optimizer``, ``rng``, ``step`` < 0, ...), a
    ``position`` at or beyond the epoch's ``steps_per_epoch`` batches (it would never reach the
    epoch's end), one RNG state per rank missing, or non-finite model or EMA weights (every step
    would be skipped). None, or a checkpoint of another spec (``--force``), passes."""
    import torch

    if ckpt is None or (spec_hash is not None and ckpt.get("spec_hash") != spec_hash):
        return
    try:
        st = _ResumeState.model_validate(ckpt)
    except ValidationError as e:
        raise ModelFileError(f"{path}: damaged checkpoint: {_field_errors(e)}") from None
    if st.position >= steps_per_epoch:
        raise ModelFileError(f"{path}: damaged checkpoint: 'position' = {st.position} is beyond the epoch's "
                             f"{steps_per_epoch} batches")
    if len(st.rng) != st.world_size:
        raise ModelFileError(f"{path}: damaged checkpoint: 'rng' holds {len(st.rng)} generator states for "
                             f"world size {st.world_size}")
    if st.best_bpd is not None and math.isnan(st.best_bpd):
        raise ModelFileError(f"{path}: damaged checkpoint: 'best_bpd' is NaN")
    for part, state in (("model", st.model), ("ema", st.ema or {})):
        for k, v in state.items():
            if not isinstance(v, torch.Tensor):
                if part == "model":
                    raise ModelFileError(f"{path}: damaged checkpoint: '{part}.{k}' is not a tensor")
                continue
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise ModelFileError(f"{path}: the checkpoint's {part} weights are not finite ('{k}' holds NaN "
                                     f"or inf): every step would be skipped. Resume from a good checkpoint "
                                     f"(copy checkpoints/best.pt to checkpoints/last.pt) or start a new --run")


__all__ = ["RunFolder", "RunResult", "TrainError", "TrainOptions", "WriteFailed", "check_resume", "read_config",
           "versions", "write_failed"]
