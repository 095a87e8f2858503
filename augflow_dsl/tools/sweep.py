"""``augflow-dsl sweep SPEC --set growth=2,6,10 --set units=2,3``: train and evaluate every point of a
grid of ``--set`` values, then print and save a table and a plot of bits/dim against the settings and
the parameter count (issue 13, part 5).

Design:

* **The grid.** Each ``--set NAME=V1,V2,...`` with a comma list is an axis; the points are the
  cartesian product of the axes in the order given (the first axis varies slowest). A single value
  is a fixed override of every point. ``train.KEY=...`` reaches the ``train:`` block as for
  ``train`` (``--set train.lr=1e-3,3e-3`` is an axis; ``train.augment=flip,translate`` is one list
  value, never an axis). A name given twice, an empty or repeated value is a usage error (exit 2).
* **Checked first.** Each point is loaded and checked analytically (``check``: its parameter
  count, no tensor) and its train settings validated before anything trains. An invalid point
  (``growth=0`` where ``cross_unit`` needs growth >= 1) is reported up front with its error and
  skipped: it stays in the table as ``invalid``; the others train. When no point is valid nothing
  trains and the exit code is 1.
* **The sweep folder** (``--out``, default ``sweeps/<spec name>/<UTC time>/``) holds ``sweep.json``
  (spec text and hash, axes, fixed overrides, the train and eval flags that define the results),
  one run folder per point named from its settings (``growth=2,units=3/``: the runtime's
  ``config.json``, ``metrics.jsonl``, ``checkpoints/``...), ``results.jsonl`` (one row per finished
  point, appended as it finishes), ``results.json`` (every point of the grid), ``table.md`` and
  ``plot.png``.
* **In-process.** Each point trains through the runtime's Python API (``runtime.train.Trainer``)
  in this process: no interpreter and torch start-up per point, and the Trainer's own SIGINT /
  SIGTERM handling writes the point's checkpoint. Each point is then evaluated exactly as
  ``augflow-dsl eval RUN --samples S`` does with its defaults (the test split, EMA weights when
  the run keeps them, batch 64, seed 0), so the table's figures are the ones ``eval`` prints.
  ``--samples`` defaults to the spec's ``train.eval_samples``.
* **Resumable.** Re-running the same command with the same ``--out`` (or ``sweep --resume DIR``)
  skips the points whose result is stored in ``results.jsonl``, and resumes a point whose training
  was interrupted: the Trainer over the same run folder with the same spec, overrides and options
  continues from its ``checkpoints/last.pt``, as ``train --resume`` does (a point whose training
  finished but whose evaluation did not is only evaluated). A folder holding another spec, grid or
  result-defining flag (``--steps/--epochs``, ``--batch``, ``--seed``, ``--precision``,
  ``--samples``) is refused with what differs (exit 1); where the data lives, the device, threads,
  logging and checkpoint intervals may change.
* **Signals.** SIGINT / SIGTERM during training: the runtime writes the point's checkpoint and
  returns; during an evaluation: the evaluation is dropped (it is redone on resume). The sweep
  then writes its results so far, says how to continue, and exits 0, as ``train`` does.
* **Exit codes**: 0 every valid point done (or stopped by a signal), 1 no valid point, a point
  that failed (non-finite steps), a bad spec, data set or sweep folder, 2 usage.
* ``--json`` prints one object (:class:`SweepResult`) on standard output; progress lines go to
  standard error.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import signal
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..language.evaluate import TRAIN_PREFIX, split_overrides

FORMAT = "augflow-dsl-sweep"
EVAL_BATCH = 64   # eval's default --batch: the noise each example draws depends on it
EVAL_SEED = 0     # eval's default --seed

Status = Literal["done", "invalid", "pending", "failed"]


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
    train: dict[str, Any]            # steps, epochs, batch, seed, precision (None: the spec's)
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


# ---------------------------------------------------------------------------------- the grid
class _Usage(Exception):
    pass


class _SweepError(Exception):
    pass


class _Stopped(BaseException):
    """Raised by the sweep's signal handler outside the Trainer's loop (a BaseException, so that no
    ``except Exception`` on the way swallows it)."""


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


def parse_grid(items: list[str]) -> Grid:
    """``--set`` items -> axes (comma lists) and fixed overrides; _Usage for a malformed one."""
    from ..errors import SpecError
    from ..language.evaluate import parse_override

    axes: dict[str, list[Any]] = {}
    fixed: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        name = key.strip()
        bare = name[len(TRAIN_PREFIX):] if name.startswith(TRAIN_PREFIX) else name
        if not eq or not bare.isidentifier():
            raise _Usage(f"--set {item}: expected NAME=VALUE or NAME=V1,V2,... (e.g. --set growth=2,6,10)")
        if name in axes or name in fixed:
            raise _Usage(f"--set {name} is given twice; give one --set {name}=V1,V2,... for an axis")
        text = text.strip()
        if name == TRAIN_PREFIX + "augment":  # a list value of the train: block, as for train
            fixed[name] = [v.strip() for v in text.strip("[]").split(",") if v.strip()]
            continue
        parts = [p.strip() for p in text.split(",")]
        if any(not p for p in parts):
            raise _Usage(f"--set {item}: empty value; write NAME=VALUE or NAME=V1,V2,... with no empty item")
        try:
            values = [parse_override(f"{bare}={p}")[1] for p in parts]
        except SpecError as e:
            raise _Usage(f"--set {item}: {e}") from None
        if len(values) == 1:
            fixed[name] = values[0]
            continue
        shown = [_fmt(v) for v in values]  # what names the points' folders: 1 and 1.0 are one value
        dup = sorted({v for v in shown if shown.count(v) > 1})
        if dup:
            raise _Usage(f"--set {item}: the axis repeats {', '.join(dup)}")
        axes[name] = values
    return Grid(axes, fixed)


def _fmt(v: Any) -> str:
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
        name = ",".join(f"{k}={_fmt(v)}" for k, v in settings.items()) or "default"
        name = name.replace(os.sep, "_")
        variables, train = split_overrides({**grid.fixed, **settings})
        out.append(Point(name, settings, variables, train, folder / name))
    return out


def _train_options(cfg: SweepConfig, run: Path):
    """The runtime's TrainOptions of one point."""
    from ..runtime.train import TrainOptions

    given = {k: v for k, v in {**cfg.train, **cfg.options}.items()
             if v is not None and k in TrainOptions.__dataclass_fields__}
    given.setdefault("device", "cpu")
    return TrainOptions(run=str(run), **given)


def check_points(points: list[Point], cfg: SweepConfig) -> None:
    """Fill each point's parameter count (the analytic ``check``: no tensor is built) or its error
    (the spec does not load or fails the audit, or a train setting is refused)."""
    from ..errors import SpecError, all_errors
    from ..graph.check import check
    from ..runtime.train import TrainError, Trainer
    from ..language.load import loads

    for p in points:
        try:
            spec = loads(cfg.spec_text, cfg.spec_file, p.variables)
        except SpecError as e:
            p.error = "; ".join(x.message for x in all_errors(e))
            continue
        report = check(spec)
        if not report.valid:
            p.error = "; ".join(e.get("message") or e.get("text") or "?" for e in report.errors)
            continue
        p.parameters = report.parameters.total
        try:
            Trainer(spec, p.variables, p.train, _train_options(cfg, p.run))
        except TrainError as e:
            p.error = str(e)


# ---------------------------------------------------------------------------------- the command
IDENTITY_FLAGS = ("steps", "epochs", "batch", "seed", "precision")
OPTION_FLAGS = ("device", "data_root", "download", "compile", "checkpoint_every", "log_every", "eval_every",
                "eval_images", "workers", "threads")


def add_command(sub, common) -> None:
    from ..cli.common import positive_int

    p = sub.add_parser("sweep", help="train and evaluate every point of a grid of --set values; a table and "
                                     "a plot of bits/dim against the settings and the parameter count",
                       description="Train and evaluate every point of a grid. Each --set NAME=V1,V2,... with a "
                                   "comma list is an axis (the points are the cartesian product of the axes); "
                                   "--set NAME=VALUE is a fixed override of every point; train.KEY=... reaches "
                                   "the train: block. Re-running the same command with the same --out (or "
                                   "sweep --resume DIR) skips the finished points and resumes an interrupted one.")
    p.add_argument("spec", nargs="?", help="the .flow spec (omit with --resume)")
    p.add_argument("--resume", metavar="SWEEP_DIR",
                   help="continue the sweep in this folder with its own spec, grid and settings")
    p.add_argument("--out", metavar="DIR", help="sweep folder (default: sweeps/<spec name>/<UTC time>/); "
                                               "an existing one of the same sweep continues")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=positive_int, default=None, help="updates per point (replaces the spec's epochs)")
    g.add_argument("--epochs", type=positive_int, default=None, help="epochs per point")
    p.add_argument("--batch", type=positive_int, default=None, help="global batch (default: the spec's train.batch)")
    p.add_argument("--seed", type=int, default=None, help="seed of every point (default: the spec's train.seed)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default=None, help="as for train (fp32)")
    p.add_argument("--samples", type=positive_int, default=None, metavar="S",
                   help="importance samples of each point's test evaluation (default: the spec's "
                        "train.eval_samples; 1: the one-sample ELBO only)")
    p.add_argument("--device", default=None, help="cpu (default) or cuda / cuda:N")
    p.add_argument("--data-root", default=None, help="where data sets are read from (and downloaded to)")
    p.add_argument("--download", action="store_true", default=None, help="download a missing torchvision data set")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the nets (regional)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--checkpoint-every", type=positive_int, default=None, help="steps between checkpoints (1000)")
    p.add_argument("--log-every", type=positive_int, default=None, help="steps between metrics rows (50)")
    p.add_argument("--eval-every", type=positive_int, default=None, help="steps between in-training test evaluations")
    p.add_argument("--eval-images", type=positive_int, default=None, help="test images per in-training evaluation (1000)")
    p.add_argument("--workers", type=int, default=None, help="data-loading worker processes (0)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    common(p)
    p.set_defaults(func=cmd_sweep)


def _console(stderr: bool = True):
    from ..cli.common import console
    return console(stderr=stderr)


def cmd_sweep(args) -> int:
    from ..errors import SpecError
    from ..runtime.checkpoint import CheckpointError
    from ..runtime.data import DataError
    from ..runtime.train import TrainError

    err = _console()
    try:
        return _sweep(args, err)
    except _Usage as e:
        err.print(f"usage error: {e}", markup=False, soft_wrap=True)
        return 2
    except (SpecError, CheckpointError, DataError, TrainError, _SweepError) as e:
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        return 1


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write(path: Path, text: str) -> None:
    """Write atomically (a temporary file renamed over the old one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _read_config(folder: Path) -> SweepConfig | None:
    path = folder / "sweep.json"
    if not path.is_file():
        return None
    try:
        return SweepConfig.model_validate_json(path.read_text())
    except ValueError as e:
        raise _SweepError(f"{path}: not a readable sweep.json ({str(e).splitlines()[0]})") from None


def _given(args, names) -> dict[str, Any]:
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def _config(args) -> tuple[SweepConfig, Path, bool]:
    """(the sweep's config, its folder, whether the folder already held it) from the command line;
    refuses a folder holding another sweep."""
    options = _given(args, OPTION_FLAGS)
    if args.resume:
        if args.spec or args.set:
            raise _Usage("--resume takes the spec and --set grid from the sweep folder; drop SPEC and --set")
        if args.out and Path(args.out) != Path(args.resume):
            raise _Usage("--resume DIR already names the sweep folder; drop --out")
        refused = sorted(_given(args, IDENTITY_FLAGS + ("samples",)))
        if refused:
            raise _Usage("--resume keeps the sweep's settings; these cannot change: "
                         + ", ".join("--" + k.replace("_", "-") for k in refused))
        folder = Path(args.resume)
        cfg = _read_config(folder)
        if cfg is None:
            raise _SweepError(f"{folder} is not a sweep folder (no sweep.json)")
        cfg.options = {**cfg.options, **options}
        return cfg, folder, True
    if not args.spec:
        raise _Usage("sweep needs a SPEC (or --resume SWEEP_DIR)")
    if not Path(args.spec).is_file():
        raise _Usage(f"no such spec file: {args.spec}")
    grid = parse_grid(args.set)
    try:
        text = Path(args.spec).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _SweepError(f"cannot read {args.spec}: {getattr(e, 'strerror', None) or e}") from None
    cfg = SweepConfig(spec_file=str(args.spec), spec_name=_spec_name(text, args.spec), spec_hash=_hash(text),
                      spec_text=text, axes=grid.axes, fixed=grid.fixed,
                      train={k: getattr(args, k) for k in IDENTITY_FLAGS}, samples=args.samples, options=options,
                      created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if args.out:
        folder = Path(args.out)
    else:
        folder = Path("sweeps") / cfg.spec_name / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    old = _read_config(folder)
    if old is None:
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise _SweepError(f"{folder} exists and is not a sweep folder (no sweep.json); use another --out")
        return cfg, folder, False
    diffs = [f"{k}: {_show(old.identity()[k], k)} in the folder, {_show(v, k)} now"
             for k, v in cfg.identity().items() if old.identity()[k] != v]
    if diffs:
        raise _SweepError(f"{folder} holds another sweep ({'; '.join(diffs)}); use another --out, or continue "
                          f"that one with: augflow-dsl sweep --resume {folder}")
    old.options = {**old.options, **options}
    return old, folder, True


def _show(v: Any, key: str) -> str:
    if key == "spec":
        return f"spec hash {str(v)[:12]}"
    return json.dumps(v)


def _spec_name(text: str, path: str) -> str:
    """The spec's ``flow:`` name (the file's stem when the spec does not load as it is)."""
    from ..errors import SpecError
    from ..language.load import loads
    try:
        return loads(text, path).name
    except SpecError:
        return Path(path).stem


def _command(cfg: SweepConfig, folder: Path) -> str:
    """The command line that makes (and continues) this sweep."""
    parts = ["augflow-dsl sweep", cfg.spec_file]
    for k, v in cfg.axes.items():
        parts.append(f"--set {k}={','.join(_fmt(x) for x in v)}")
    for k, v in cfg.fixed.items():
        parts.append(f"--set {k}={','.join(v) if isinstance(v, list) else _fmt(v)}")
    for k, v in cfg.train.items():
        if v is not None:
            parts.append(f"--{k.replace('_', '-')} {v}")
    if cfg.samples is not None:
        parts.append(f"--samples {cfg.samples}")
    parts.append(f"--out {folder}")
    return " ".join(parts)


def _load_results(folder: Path) -> dict[str, PointResult]:
    """The finished points of ``results.jsonl`` (the last row of each name; a torn last line is ignored)."""
    path = folder / "results.jsonl"
    out: dict[str, PointResult] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            row = PointResult.model_validate_json(line)
        except ValueError:
            continue
        out[row.name] = row
    return out


def _append(folder: Path, row: PointResult) -> None:
    with (folder / "results.jsonl").open("a") as f:
        f.write(row.model_dump_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


def _sweep(args, err) -> int:
    cfg, folder, existing = _config(args)
    device = str(cfg.options.get("device") or "cpu")
    import torch
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise _Usage(f"--device {device} but no CUDA device is available")
    try:
        torch.device(device)
    except RuntimeError as e:
        raise _Usage(f"--device {device}: {e}") from None
    if cfg.options.get("threads"):
        torch.set_num_threads(int(cfg.options["threads"]))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write(folder / "sweep.json", cfg.model_dump_json(indent=2))
    except OSError as e:
        raise _SweepError(f"cannot write the sweep folder {folder}: {e.strerror or e}") from None

    grid = Grid(cfg.axes, cfg.fixed)
    points = points_of(grid, folder)
    check_points(points, cfg)
    stored = _load_results(folder)
    quiet = args.json
    say = (lambda text: err.print(text, markup=False, highlight=False, soft_wrap=True))
    axes = " x ".join(f"{k} ({len(v)})" for k, v in cfg.axes.items()) or "no axis"
    valid = [p for p in points if p.error is None]
    todo = [p for p in valid if not (p.name in stored and stored[p.name].status == "done")]
    say(f"sweep folder: {folder}{' (continuing)' if existing else ''}")
    say(f"grid: {len(points)} point(s), {axes}; {len(points) - len(valid)} invalid, "
        f"{len(valid) - len(todo)} done earlier, {len(todo)} to run")
    for p in points:
        if p.error is not None:
            say(f"  invalid, skipped: {p.name}: {p.error}")

    rows: dict[str, PointResult] = {}
    for p in points:
        if p.error is not None:
            rows[p.name] = PointResult(name=p.name, settings=p.settings, run=str(p.run), status="invalid",
                                       error=p.error)
        elif p.name in stored and stored[p.name].status == "done":
            rows[p.name] = stored[p.name].model_copy(update={"parameters": p.parameters, "run": str(p.run)})
        else:
            rows[p.name] = PointResult(name=p.name, settings=p.settings, run=str(p.run), status="pending",
                                       parameters=p.parameters)
    state: dict[str, Any] = {"signal": None}
    stopped = None
    show = not quiet and err.is_terminal
    if valid:
        old = _install_signals(state)
        try:
            for i, p in enumerate(valid, 1):
                row = rows[p.name]
                tag = f"[{i}/{len(valid)}] {p.name}"
                if row.status == "done":
                    say(f"{tag}: done earlier, skipped  {_figures(row)}")
                    continue
                row = _run_point(p, cfg, rows, tag, err, show, say, state)
                rows[p.name] = row
                if row.status in ("done", "failed"):
                    _append(folder, row)
                _save(cfg, folder, rows, None, plot=False)
                if state["signal"]:
                    raise _Stopped(state["signal"])
        except _Stopped:
            stopped = f"signal {state['signal']}"
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    result = _save(cfg, folder, rows, stopped)
    if quiet:
        print(result.model_dump_json())
    else:
        _print_table(result, cfg, _console(stderr=False))
        say(f"table: {folder / 'table.md'}   plot: {folder / 'plot.png'}   results: {folder / 'results.json'}")
    if stopped:
        say(f"stopped by {stopped[7:]}; the interrupted point's checkpoint is kept. Continue with: "
            f"augflow-dsl sweep --resume {folder}")
        return 0
    if not valid:
        say("error: no point of the grid is valid; nothing was trained")
        return 1
    failed = [r.name for r in rows.values() if r.status == "failed"]
    if failed:
        say(f"error: {len(failed)} point(s) failed: {', '.join(failed)}")
        return 1
    return 0


def _install_signals(state: dict) -> dict:
    """SIGINT / SIGTERM outside the Trainer's loop stop the sweep (the Trainer installs its own while
    it trains, and restores these after)."""
    def handler(signum, frame):  # noqa: ARG001
        if state["signal"] is None:
            state["signal"] = signal.Signals(signum).name
            raise _Stopped(state["signal"])

    old = {}
    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            old[s] = signal.signal(s, handler)
        except ValueError:  # not the main thread
            pass
    return old


def _figures(row: PointResult) -> str:
    parts = []
    if row.elbo_bpd is not None:
        parts.append(f"ELBO {row.elbo_bpd:.4f} ± {row.elbo_se:.4f}")
    if row.iw_bpd is not None:
        parts.append(f"IW {row.iw_bpd:.4f} ± {row.iw_se:.4f} (S = {row.samples})")
    return "  ".join(parts)


def _run_point(p: Point, cfg: SweepConfig, rows: dict[str, PointResult], tag: str, err, show: bool, say,
               state: dict) -> PointResult:
    """Train (or resume) one point, then evaluate it; its row (in ``rows`` as soon as it trained, so that a
    signal during the evaluation keeps what training did)."""
    from ..language.load import loads
    from ..runtime.train import Trainer

    spec = loads(cfg.spec_text, cfg.spec_file, p.variables)
    opts = _train_options(cfg, p.run)
    resuming = (p.run / "checkpoints" / "last.pt").is_file()
    say(f"{tag}: {p.parameters:,} parameters, {'resuming' if resuming else 'training'} in {p.run}")
    first: dict[str, int] = {}
    progress = _progress(err, show)
    task = {"id": None}

    def on_progress(step, total, loss, bpd, ips):
        first.setdefault("step", step - 1)
        if task["id"] is None:
            task["id"] = progress.add_task(p.name, total=total, completed=step - 1, info="")
        progress.update(task["id"], completed=step, info=f"bpd {bpd:.3f}  {ips or 0:.0f} img/s")

    trainer = Trainer(spec, p.variables, p.train, opts, console=err, on_progress=on_progress)
    with progress:
        result = trainer.run()
    resumed_from = (first.get("step", result.step) if resuming else None)
    row = rows[p.name].model_copy(update={"steps": result.step, "epochs": result.epoch,
                                          "train_seconds": result.seconds, "train_bpd": result.train_bpd,
                                          "resumed_from": resumed_from})
    rows[p.name] = row
    if result.stopped.startswith("signal"):
        state["signal"] = state["signal"] or result.stopped[7:]
        say(f"{tag}: stopped at step {result.step}; checkpoint {result.checkpoint}")
        return row
    if result.stopped != "done":
        say(f"{tag}: failed: {result.stopped} at step {result.step} (last good checkpoint "
            f"{result.checkpoint or 'none'})")
        return row.model_copy(update={"status": "failed", "error": f"{result.stopped} at step {result.step}"})
    samples = cfg.samples or trainer.train.eval_samples
    ev = evaluate_run(p.run, samples, cfg, err, show, p.name)
    row = row.model_copy(update={"status": "done", **ev})
    resumed = f" (resumed from step {resumed_from})" if resumed_from is not None else ""
    say(f"{tag}: {result.step} steps in {result.seconds:.1f} s{resumed}  {_figures(row)}  "
        f"eval {row.eval_seconds:.1f} s")
    return row


def _progress(err, show: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("  [bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err, disable=not show,
                    transient=True)


def evaluate_run(run: Path, samples: int, cfg: SweepConfig, err=None, show: bool = False,
                 label: str = "") -> dict[str, Any]:
    """Test-split bits/dim of a run folder, as ``augflow-dsl eval RUN --samples S`` computes it with
    its defaults (checkpoints/last.pt, EMA weights when kept, batch 64, seed 0)."""
    from ..runtime.checkpoint import load_model
    from ..runtime.data import open_dataset
    from ..runtime.scoring import evaluate

    device = str(cfg.options.get("device") or "cpu")
    model, spec, meta = load_model(run, ema=True, map_location="cpu")
    model = model.to(device)
    seed = int((meta.get("train") or {}).get("seed", 0))
    source = open_dataset(spec.data, cfg.options.get("data_root"), bool(cfg.options.get("download")), seed)
    progress = _progress(err, show) if err is not None else _progress(_console(), False)
    with progress:
        task = progress.add_task(f"{label} eval", total=None, info="")

        def on_eval(done: int, total: int, s: dict) -> None:
            progress.update(task, completed=done, total=total, info=f"bpd {s['bpd']:.4f}")

        res = evaluate(model, source.test, samples=samples, batch=EVAL_BATCH, seed=EVAL_SEED, progress=on_eval)
    return {"weights": meta.get("weights"), "n": res.n, "samples": res.samples, "elbo_bpd": res.elbo_bpd,
            "elbo_se": res.elbo_se, "iw_bpd": res.iw_bpd, "iw_se": res.iw_se, "eval_seconds": res.seconds}


# ---------------------------------------------------------------------------------- table and plot
def _save(cfg: SweepConfig, folder: Path, rows: dict[str, PointResult], stopped: str | None,
          plot: bool = True) -> SweepResult:
    """results.json and table.md (after each point), and plot.png (at the end) from the rows so far."""
    result = SweepResult(sweep=str(folder), spec=cfg.spec_name, axes=cfg.axes, fixed=cfg.fixed, stopped=stopped,
                         points=list(rows.values()))
    _write(folder / "results.json", result.model_dump_json(indent=2))
    _write(folder / "table.md", markdown_table(result, cfg, folder))
    if plot:
        try:
            draw_plot(result, folder / "plot.png")
        except Exception as e:  # noqa: BLE001 - a picture is never worth the sweep's results
            print(f"warning: could not draw plot.png: {e}", file=sys.stderr)
    return result


def _columns(result: SweepResult) -> list[str]:
    samples = sorted({r.samples for r in result.points if r.iw_bpd is not None})
    iw = f"IW bits/dim (S = {', '.join(str(s) for s in samples)})" if samples else None
    return [*result.axes, "parameters", "steps", "ELBO bits/dim", *([iw] if iw else []), "train s", "eval s",
            "status"]


def table_rows(result: SweepResult) -> list[list[str]]:
    """The table's cells, one row per point (figures to 4 decimals, ± one standard error)."""
    has_iw = any(r.iw_bpd is not None for r in result.points)

    def f(v, se) -> str:
        return "-" if v is None else f"{v:.4f} ± {se:.4f}"

    out = []
    for r in result.points:
        cells = [_fmt(r.settings.get(k)) for k in result.axes]
        cells += [f"{r.parameters:,}" if r.parameters is not None else "-", str(r.steps) if r.steps else "-",
                  f(r.elbo_bpd, r.elbo_se)]
        if has_iw:
            cells.append(f(r.iw_bpd, r.iw_se))
        cells += ["-" if r.train_seconds is None else f"{r.train_seconds:.1f}",
                  "-" if r.eval_seconds is None else f"{r.eval_seconds:.1f}",
                  r.status if r.error is None else f"{r.status}: {r.error}"]
        out.append(cells)
    return out


def markdown_table(result: SweepResult, cfg: SweepConfig, folder: Path) -> str:
    cols = _columns(result)
    lines = [f"# Sweep of {cfg.spec_name}", "", f"`{_command(cfg, folder)}`", ""]
    if cfg.fixed:
        lines += ["Fixed: " + ", ".join(f"`{k}={v}`" for k, v in cfg.fixed.items()), ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for cells in table_rows(result):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "Test split, EMA weights when kept (as `augflow-dsl eval`); ± is one standard error over the "
              "examples. Parameters from `augflow-dsl check` (analytic)."]
    if result.stopped:
        lines.append(f"Stopped by {result.stopped[7:]}; pending points are not trained yet.")
    return "\n".join(lines) + "\n"


def _print_table(result: SweepResult, cfg: SweepConfig, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(f"sweep of {cfg.spec_name}: test bits/dim"), header_style="bold")
    cols = _columns(result)
    for c in cols:
        t.add_column(escape(c), justify="left" if c == "status" else "right")
    for cells in table_rows(result):
        t.add_row(*(escape(c) for c in cells))
    console.print(t)
    console.print("± is one standard error over the test examples", style="dim")


@dataclass
class Series:
    """One line of the plot: its panel (an axis name, or "parameters"), label, metric and points."""

    panel: str
    label: str
    metric: str                      # "iw" or "elbo"
    x: list[Any]
    y: list[float]
    err: list[float]


def plot_series(result: SweepResult) -> list[Series]:
    """What plot.png draws: for each axis, bits/dim against its values, one line per combination of
    the other axes' values; then bits/dim against the parameter count, one line along the first axis
    per combination of the others. Done points only; IW and ELBO."""
    done = [r for r in result.points if r.status == "done"]
    axes = list(result.axes)
    metrics = [m for m in ("iw", "elbo") if any(getattr(r, f"{m}_bpd") is not None for r in done)]
    out: list[Series] = []
    panels = [(a, a) for a in axes] + [("parameters", axes[0] if axes else None)]
    for panel, along in panels:
        others = [b for b in axes if b != along]
        groups: dict[tuple, list[PointResult]] = {}
        for r in done:
            groups.setdefault(tuple(json.dumps(r.settings.get(b)) for b in others), []).append(r)
        for key, members in groups.items():
            label = ", ".join(f"{b}={_fmt(json.loads(v))}" for b, v in zip(others, key)) or result.spec
            for m in metrics:
                pts = [(r.parameters if panel == "parameters" else r.settings[panel], getattr(r, f"{m}_bpd"),
                        getattr(r, f"{m}_se")) for r in members if getattr(r, f"{m}_bpd") is not None]
                if pts:
                    out.append(Series(panel, label, m, [p[0] for p in pts], [p[1] for p in pts],
                                      [p[2] if p[2] is not None and math.isfinite(p[2]) else 0.0 for p in pts]))
    return out


def draw_plot(result: SweepResult, out: Path) -> list[Series]:
    """plot.png (matplotlib, no display): the :func:`plot_series` lines, IW solid, ELBO dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = plot_series(result)
    panels = list(result.axes) + ["parameters"]
    fig, axs = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), dpi=100, squeeze=False)
    names = {"iw": "IW", "elbo": "ELBO"}
    for ax, panel in zip(axs[0], panels):
        values = result.axes.get(panel, [])
        numeric = panel == "parameters" or all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in values)
        colours: dict[str, Any] = {}
        for s in (s for s in series if s.panel == panel):
            xs = s.x if numeric else [values.index(v) for v in s.x]
            colour = colours.get(s.label)
            line = ax.errorbar(xs, s.y, yerr=s.err, marker="o", ms=4, capsize=2, color=colour,
                               ls="-" if s.metric == "iw" or len(set(x.metric for x in series)) == 1 else "--",
                               alpha=1.0 if s.metric == "iw" else 0.6, label=f"{s.label} ({names[s.metric]})")
            colours.setdefault(s.label, line.lines[0].get_color())
        if not numeric:
            ax.set_xticks(range(len(values)), [_fmt(v) for v in values])
        elif panel != "parameters":
            shown = sorted({x for s in series if s.panel == panel for x in s.x})
            if 0 < len(shown) <= 12:
                ax.set_xticks(shown, [_fmt(v) for v in shown])
        ax.set_xlabel("parameters" if panel == "parameters" else panel)
        ax.set_ylabel("test bits/dim")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    fig.suptitle(f"sweep of {result.spec}")
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)
    return series


__all__ = ["PointResult", "SweepConfig", "SweepResult", "add_command", "cmd_sweep", "evaluate_run", "parse_grid",
           "plot_series", "points_of"]
