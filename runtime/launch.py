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
                               "log_every", "eval_every", "eval_images", "max_bad_steps", "workers", "compile"})


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


def _options(values: dict):
    from .train import TrainOptions
    opts = TrainOptions(**values)
    if opts.device is None:
        opts.device = "cpu"
    return opts


def new_run(spec_path: str | Path, variables: dict, train_over: dict, options: dict,
            run: str | Path | None = None) -> TrainSetup:
    """A new run of the spec at ``spec_path`` (``options``: TrainOptions fields; ``run``: the run
    folder, default ``runs/<spec name>/<UTC time>``). Raises SpecError for a spec that does not
    load, :class:`InvalidSpec` for one that does not check."""
    from ..graph.pipeline import analyze

    a = analyze(spec_path, variables)
    if a.load_error is not None:
        raise a.load_error
    if not a.valid:
        raise InvalidSpec([e.get("text") or e.get("message") for e in a.report.errors])
    spec = a.spec
    run = run or str(Path("runs") / spec.name / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S"))
    return TrainSetup(spec, variables, train_over, _options({"run": str(run), **options}), a)


def resume_run(run: str | Path, options: dict) -> TrainSetup:
    """The run in folder ``run`` with its own spec, overrides and options, ``options`` (only
    :data:`RESUME_MAY_CHANGE` ones) replacing the saved ones. Raises :class:`NotARunFolder`."""
    from ..language.load import loads
    from .train import TrainOptions

    run = Path(run)
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise NotARunFolder(f"{run} is not a run folder (no config.json)")
    cfg = json.loads(cfg_path.read_text())
    spec = loads(cfg["spec_text"], cfg.get("spec_file", str(run)), cfg.get("overrides") or {})
    variables, train_over = cfg.get("overrides") or {}, cfg.get("train_overrides") or {}
    values = {**cfg.get("options", {}), **options, "run": str(run)}
    return TrainSetup(spec, variables, train_over,
                      _options({k: v for k, v in values.items() if k in TrainOptions.__dataclass_fields__}))


__all__ = ["InvalidSpec", "NotARunFolder", "RESUME_MAY_CHANGE", "TrainSetup", "new_run", "resume_run"]
