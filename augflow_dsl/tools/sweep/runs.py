"""Running a sweep: every valid point trained (or resumed) through the runtime's Trainer in this
process, then evaluated with eval's scoring function (``runtime.scoring.evaluate``) and eval's
defaults; SIGINT / SIGTERM stop the sweep between points and keep what was done."""
from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .folder import append_result, load_results, write_atomic
from .grid import Grid, Point, check_points, point_spec, points_of, train_options
from .records import (PointResult, Stopped, SweepConfig, SweepError, SweepResult,
                      SweepUsageError)
from .table import save

@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep ended with: its result (as saved), folder, the signal that stopped it (or None), and
    whether any point was valid."""

    result: SweepResult
    folder: Path
    stopped: str | None
    any_valid: bool

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.result.points if r.status == "failed"]


def run_sweep(cfg: SweepConfig, folder: Path, existing: bool, err, quiet: bool = False) -> SweepOutcome:
    """Check every point of the sweep ``cfg`` in ``folder`` (``existing``: it already held the sweep),
    then train and evaluate each valid one not done yet; progress lines to the console ``err`` (bars
    only when it is a terminal and not ``quiet``). Raises SweepUsageError for an unusable device,
    SweepError for a folder that cannot be written."""
    device = str(cfg.options.get("device") or "cpu")
    import torch
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SweepUsageError(f"--device {device} but no CUDA device is available")
    try:
        torch.device(device)
    except RuntimeError as e:
        raise SweepUsageError(f"--device {device}: {e}") from None
    if cfg.options.get("threads"):
        torch.set_num_threads(int(cfg.options["threads"]))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "sweep.json", cfg.model_dump_json(indent=2))
    except OSError as e:
        raise SweepError(f"cannot write the sweep folder {folder}: {e.strerror or e}") from None

    grid = Grid(cfg.axes, cfg.fixed)
    points = points_of(grid, folder)
    check_points(points, cfg)
    stored = load_results(folder)
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
                    append_result(folder, row)
                save(cfg, folder, rows, None, plot=False)
                if state["signal"]:
                    raise Stopped(state["signal"])
        except Stopped:
            stopped = f"signal {state['signal']}"
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    return SweepOutcome(save(cfg, folder, rows, stopped), folder, stopped, bool(valid))


def _install_signals(state: dict) -> dict:
    """SIGINT / SIGTERM outside the Trainer's loop stop the sweep (the Trainer installs its own while
    it trains, and restores these after)."""
    def handler(signum, frame):  # noqa: ARG001
        if state["signal"] is None:
            state["signal"] = signal.Signals(signum).name
            raise Stopped(state["signal"])

    old = {}
    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            old[s] = signal.signal(s, handler)
        except ValueError:  # not the main thread
            pass
    return old


def _figures(row: PointResult) -> str:
    def pm(se: float | None) -> str:  # one test example has no standard error
        return f" ± {se:.4f}" if se is not None else ""
    parts = []
    if row.elbo_bpd is not None:
        parts.append(f"ELBO {row.elbo_bpd:.4f}{pm(row.elbo_se)}")
    if row.iw_bpd is not None:
        parts.append(f"IW {row.iw_bpd:.4f}{pm(row.iw_se)} (S = {row.samples})")
    return "  ".join(parts)


def _run_point(p: Point, cfg: SweepConfig, rows: dict[str, PointResult], tag: str, err, show: bool, say,
               state: dict) -> PointResult:
    """Train (or resume) one point, then evaluate it; its row (in ``rows`` as soon as it trained, so that a
    signal during the evaluation keeps what training did)."""
    from ...runtime.train import Trainer

    spec = p.analysis.spec if p.analysis is not None else point_spec(cfg, p.variables)
    opts = train_options(cfg, p.run)
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

    trainer = Trainer(spec, p.variables, p.train, opts, console=err, on_progress=on_progress, analysis=p.analysis)
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
    from ...compiler.model_file import load_model
    from ...language.datasets import spec_condition
    from ...runtime.data import open_dataset
    from ...runtime.scoring import evaluate

    device = str(cfg.options.get("device") or "cpu")
    model, spec, meta = load_model(run, ema=True, map_location="cpu")
    if cfg.train.get("data"):
        from ...language.datasets import with_data
        spec = with_data(spec, cfg.train["data"])
    model = model.to(device)
    seed = int((meta.get("train") or {}).get("seed", 0))
    source = open_dataset(spec.data, cfg.options.get("data_root"), bool(cfg.options.get("download")), seed,
                          **spec_condition(spec))
    if err is None:
        from ...errors import SafeConsole as Console
        err = Console(stderr=True)
        show = False
    progress = _progress(err, show)
    with progress:
        task = progress.add_task(f"{label} eval", total=None, info="")

        def on_eval(done: int, total: int, s: dict) -> None:
            progress.update(task, completed=done, total=total, info=f"bpd {s['bpd']:.4f}")

        # evaluate's own batch and seed, which are eval's defaults: the noise each example draws depends on them
        res = evaluate(model, source.test, samples=samples, progress=on_eval)
    return {"weights": meta.get("weights"), "n": res.n, "samples": res.samples, "elbo_bpd": res.elbo_bpd,
            "elbo_se": res.elbo_se, "iw_bpd": res.iw_bpd, "iw_se": res.iw_se, "eval_seconds": res.seconds}


