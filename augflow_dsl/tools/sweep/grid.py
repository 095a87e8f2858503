"""The grid: ``--set`` items -> axes and fixed overrides, the points (each with its run folder), and
each point checked analytically before anything trains."""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...language.evaluate import TRAIN_PREFIX, split_overrides
from .records import SweepConfig, SweepUsageError


@dataclass
class Grid:
    axes: dict[str, list[Any]]                      # name (train.KEY for the train: block) -> values
    fixed: dict[str, Any]


@dataclass
class Point:
    name: str
    settings: dict[str, Any]
    variables: dict[str, Any]
    train: dict[str, Any]
    run: Path
    parameters: int | None = None
    error: str | None = None
    analysis: Any = None  # the checked spec (graph.pipeline.Analysis), compiled as it is when trained


def parse_grid(items: list[str]) -> Grid:
    """``--set`` items -> axes (comma lists) and fixed overrides; SweepUsageError for a malformed one."""
    from ...errors import SpecError
    from ...language.evaluate import parse_override

    axes: dict[str, list[Any]] = {}
    fixed: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        name = key.strip()
        bare = name[len(TRAIN_PREFIX):] if name.startswith(TRAIN_PREFIX) else name
        if not eq or not bare.isidentifier():
            raise SweepUsageError(f"--set {item}: expected NAME=VALUE or NAME=V1,V2,... (e.g. --set growth=2,6,10)")
        if name in axes or name in fixed:
            raise SweepUsageError(f"--set {name} is given twice; give one --set {name}=V1,V2,... for an axis")
        text = text.strip()
        if name == TRAIN_PREFIX + "augment":  # a list value of the train: block, as for train
            fixed[name] = [v.strip() for v in text.strip("[]").split(",") if v.strip()]
            continue
        parts = [p.strip() for p in text.split(",")]
        if any(not p for p in parts):
            raise SweepUsageError(f"--set {item}: empty value; write NAME=VALUE or NAME=V1,V2,... with no empty item")
        try:
            values = [parse_override(f"{bare}={p}")[1] for p in parts]
        except SpecError as e:
            raise SweepUsageError(f"--set {item}: {e}") from None
        if len(values) == 1:
            fixed[name] = values[0]
            continue
        shown = [fmt(v) for v in values]  # what names the points' folders: 1 and 1.0 are one value
        dup = sorted({v for v in shown if shown.count(v) > 1})
        if dup:
            raise SweepUsageError(f"--set {item}: the axis repeats {', '.join(dup)}")
        axes[name] = values
    return Grid(axes, fixed)


def fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def points_of(grid: Grid, folder: Path) -> list[Point]:
    """The grid's points in order, each with its run folder (named from its axis settings)."""
    names = list(grid.axes)
    out = []
    for combo in itertools.product(*grid.axes.values()) if names else [()]:
        settings = dict(zip(names, combo))
        name = ",".join(f"{k}={fmt(v)}" for k, v in settings.items()) or "default"
        name = name.replace(os.sep, "_")
        variables, train = split_overrides({**grid.fixed, **settings})
        out.append(Point(name, settings, variables, train, folder / name))
    return out


def train_options(cfg: SweepConfig, run: Path):
    """The runtime's TrainOptions of one point."""
    from ...runtime.train import TrainOptions

    given = {k: v for k, v in {**cfg.train, **cfg.options}.items()
             if v is not None and k in TrainOptions.__dataclass_fields__}
    given.setdefault("device", "cpu")
    # the sweep scores each trained point itself, on the whole test split (evaluate_run)
    return TrainOptions(run=str(run), final_eval=False, **given)


def point_spec(cfg: SweepConfig, variables: dict):
    """The spec of one point: the sweep's text with the point's variables, its own data located
    (``--data`` or the spec's data.path, made absolute when the sweep was made)."""
    from ...language.datasets import with_data
    from ...language.load import loads

    spec = loads(cfg.spec_text, cfg.spec_file, variables)
    data = cfg.train.get("data")
    return with_data(spec, data) if data else spec


def check_points(points: list[Point], cfg: SweepConfig) -> None:
    """Fill each point's parameter count (the analytic ``check``: no tensor is built) or its error
    (the spec does not load or fails the audit, or a train setting is refused)."""
    from ...errors import SpecError, all_errors
    from ...graph.pipeline import analyze
    from ...runtime.train import TrainError, Trainer

    for p in points:
        try:
            spec = point_spec(cfg, p.variables)
        except SpecError as e:
            p.error = "; ".join(x.message for x in all_errors(e))
            continue
        except ValueError as e:  # --data that is neither a folder nor a .npz file
            p.error = str(e)
            continue
        p.analysis = analyze(spec)
        report = p.analysis.report
        if not report.valid:
            p.error = "; ".join(e.get("message") or e.get("text") or "?" for e in report.errors)
            continue
        p.parameters = report.parameters.total
        try:
            Trainer(spec, p.variables, p.train, train_options(cfg, p.run))
        except TrainError as e:
            p.error = str(e)

