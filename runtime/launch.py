"""Setting up a training run from plain arguments (what ``augflow-dsl train`` and ``compile
--train`` call): a new run from a spec file and its overrides, or a run folder to resume."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# the options a resumed run may change; the others (batch, precision, seed, ...) stay the run's
RESUME_MAY_CHANGE = frozenset({"steps", "epochs", "device", "data_root", "download", "checkpoint_every",
                               "log_every", "eval_every", "eval_images", "eval_raw", "max_bad_steps", "workers",
                               "compile", "tensorboard", "threads", "diverge_factor"})


class NotARunFolder(Exception):
    """A folder to resume that holds no ``config.json``."""


class InvalidSpec(Exception):
    """The spec loads but does not check; ``messages`` holds its file:line:col errors."""

    def __init__(self, messages: list[str]):
        super().__init__("\n".join(messages))
        self.messages = messages


@dataclass
class TrainSetup:
    """What :class:`~augflow_dsl.runtime.train.Trainer` takes: the spec, its ``let`` overrides,
    its ``train.KEY`` overrides, the run's options and, for a new run, the spec's checked
    :class:`~augflow_dsl.graph.pipeline.Analysis` (so the pipeline runs once)."""
    spec: Any
    variables: dict
    train_over: dict
    opts: Any  # TrainOptions
    analysis: Any = None
    changes: dict | None = None  # a resume's command-line changes: {"train": {...}, "options": {...}}


def _options(values: dict):
    from .train import TrainOptions
    opts = TrainOptions(**values)
    if opts.device is None:
        opts.device = "cpu"
    return opts


def new_run(spec_path: str | Path, variables: dict, train_over: dict, options: dict,
            run: str | Path | None = None) -> TrainSetup:
    """A new run of the spec at ``spec_path`` (``options``: TrainOptions fields; ``run``: the run
    folder, default ``runs/<spec name>/<UTC time>``). ``options["data"]`` (``--data PATH``) replaces
    the spec's data with an image folder or .npz file; the run keeps the absolute path of its own
    data in its options, so a resumed run reads the same files. Raises SpecError for a spec that
    does not load, :class:`InvalidSpec` for one that does not check, DataError for a ``--data``
    that is neither a folder nor a .npz file."""
    from ..graph.pipeline import analyze
    from ..language.datasets import OWN_SETS
    from ..language.load import load

    spec = locate_data(load(spec_path, variables), options.get("data"))
    if spec.data.dataset in OWN_SETS:
        options = {**options, "data": spec.data.path}
    a = analyze(spec)
    if not a.valid:
        raise InvalidSpec([e.get("text") or e.get("message") for e in a.report.errors])
    spec = a.spec
    run = run or str(Path("runs") / spec.name / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S"))
    return TrainSetup(spec, variables, train_over, _options({"run": str(run), **options}), a)


def resume_run(run: str | Path, options: dict, train_changes: dict | None = None) -> TrainSetup:
    """The run in folder ``run`` with its own spec, overrides and options, then the changes its
    config.json records (runtime.resume_checks), then ``options`` (only :data:`RESUME_MAY_CHANGE`
    ones) and ``train_changes`` (``--set train.KEY``, only resume_checks.RESUME_TRAIN_KEYS). The
    Trainer records the new ones in config.json once the checkpoint is loaded. Raises
    :class:`NotARunFolder`, TrainError for a train key a resume may not change."""
    from .resume_checks import LENGTH_OPTIONS, RESUME_TRAIN_KEYS
    from .run_folder import TrainError
    from ..language.load import loads
    from .run_folder import read_config
    from .train import TrainOptions

    run = Path(run)
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise NotARunFolder(f"{run} is not a run folder (no config.json)")
    cfg = read_config(cfg_path)  # every field checked: TrainError names the field (issue 24)
    spec = loads(cfg["spec_text"], cfg.get("spec_file", str(run)), cfg.get("overrides") or {})
    variables, train_over = cfg.get("overrides") or {}, dict(cfg.get("train_overrides") or {})
    values = dict(cfg.get("options", {}))
    for change in cfg.get("changes") or []:  # recorded by earlier resumes, in order
        train_over.update(change.get("train") or {})
        recorded = {k: v for k, v in (change.get("options") or {}).items() if k in LENGTH_OPTIONS}
        values.update({**({k: None for k in LENGTH_OPTIONS} if recorded else {}), **recorded})
    refused = sorted(set(train_changes or {}) - RESUME_TRAIN_KEYS)
    if refused:
        raise TrainError("--resume may change only " + ", ".join(f"train.{k}" for k in sorted(RESUME_TRAIN_KEYS))
                         + "; not " + ", ".join(f"train.{k}" for k in refused))
    train_changes = dict(train_changes or {})
    if "steps" in train_changes:  # --set train.steps=N on a resume is --steps N
        options = {**options, "steps": train_changes.pop("steps")}
    train_over.update(train_changes)
    length = {k: options[k] for k in LENGTH_OPTIONS if options.get(k) is not None}
    if length:  # --steps replaces --epochs and back
        values.update({k: None for k in LENGTH_OPTIONS})
    values = {**values, **options, "run": str(run)}
    spec = locate_data(spec, values.get("data"))
    changes = {"train": train_changes, "options": length}
    return TrainSetup(spec, variables, train_over,
                      _options({k: v for k, v in values.items() if k in TrainOptions.__dataclass_fields__}),
                      changes=changes if any(changes.values()) else None)


def locate_data(spec, path: str | None):
    """The spec with its own data located (language.datasets.with_data: ``path`` is ``--data``, a
    relative ``data.path`` is taken from the spec file's folder); DataError for a bad ``path``."""
    from ..language.datasets import with_data
    from .data_files import DataError

    try:
        return with_data(spec, path)
    except ValueError as e:
        raise DataError(str(e)) from None


def run_data(checkpoint: str | Path) -> str | None:
    """The own data (``--data``) the run that wrote ``checkpoint`` (``RUN/checkpoints/*.pt``) was
    trained on, from its config.json; None when there is none."""
    cfg = Path(checkpoint).parent.parent / "config.json"
    try:
        return (json.loads(cfg.read_text()).get("options") or {}).get("data")
    except (OSError, ValueError, AttributeError):
        return None


__all__ = ["InvalidSpec", "NotARunFolder", "RESUME_MAY_CHANGE", "TrainSetup", "locate_data", "new_run", "resume_run",
           "run_data"]
