"""A sweep whose points run as scheduled jobs (``--launcher submitit|submitit-local``, issue 25):
each point one job (one job array for all the points submitted together) through
:mod:`augflow_dsl.tools.cluster`; the job trains the point's run folder exactly as ``train`` does, then
evaluates it as the local loop does and stores its row in ``RUN/point.json``.

``SWEEP/jobs.json`` records each point's job ids (submitit's files are in ``SWEEP/jobs/``). Rerunning the
sweep (or ``sweep --resume``) learns each point's state from its run folder and the scheduler: a point
done is skipped, a point whose job is queued or running is left alone, and a point that failed, was
preempted or killed (its job is gone without a result) is submitted again: its job resumes from its
``last.pt``. Each run then collects what is done into ``results.jsonl``, ``results.json``, ``table.md``
and ``plot.png`` as the local loop does. ``sweep --status`` prints the states (:func:`print_status`)."""
from __future__ import annotations

import signal
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ..cluster import LIVE_STATES, LauncherSettings, TrainJob, executor_for, job_state, sbatch_script, submit_jobs
from .folder import append_result, load_results, write_atomic
from .grid import Grid, Point, check_points, points_of, train_options
from .records import PointResult, SweepConfig, SweepError
from .table import save

JOBS = "jobs.json"


class JobRecord(BaseModel):
    job_id: str
    launcher: str
    submitted: str


class JobsFile(BaseModel):
    """``SWEEP/jobs.json``: each point's jobs, oldest first; submitit's files are in ``folder``."""

    folder: str = "jobs"
    points: dict[str, list[JobRecord]] = Field(default_factory=dict)


def read_jobs(folder: Path) -> JobsFile:
    try:
        return JobsFile.model_validate_json((folder / JOBS).read_text())
    except (OSError, ValueError):
        return JobsFile()


@dataclass
class PointJob(TrainJob):
    """One point's job: train (:class:`TrainJob`), then evaluate as the local loop does and store the row
    in ``RUN/point.json``."""

    name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    parameters: int | None = None
    samples: int | None = None
    cfg: SweepConfig | None = None

    def finished(self, result) -> dict[str, Any]:
        from .runs import evaluate_run

        row = PointResult(name=self.name, settings=self.settings, run=str(self.run), status="failed",
                          parameters=self.parameters, steps=result.step, epochs=result.epoch,
                          train_seconds=result.seconds, train_bpd=result.train_bpd)
        if result.stopped == "done":
            samples = self.samples or self.cfg.samples or _eval_samples(self)
            row = row.model_copy(update={"status": "done", **evaluate_run(self.run, samples, self.cfg)})
        elif result.stopped == "bad steps":
            row = row.model_copy(update={"error": f"bad steps at step {result.step}"})
        else:  # stopped by a signal and not requeued: the run folder says how far it got
            return {}
        write_atomic(self.run / "point.json", row.model_dump_json(indent=2))
        return {"point": row.model_dump()}


def _eval_samples(job: PointJob) -> int:
    from ...language.load import loads
    spec = loads(job.spec_text, job.spec_file, job.variables)
    return spec.train.merged(job.train_over).eval_samples


# ----------------------------------------------------------------------------- states
@dataclass
class PointState:
    """What the run folder and the scheduler say of one point."""

    point: Point
    state: str                      # done, failed, queued, running, interrupted, pending, invalid
    job_id: str | None = None
    scheduler: str | None = None    # the scheduler's state of the last job
    step: int | None = None
    train_bpd: float | None = None
    test_bpd: float | None = None
    row: PointResult | None = None  # the point's result (done or failed)

    @property
    def name(self) -> str:
        return self.point.name


def point_states(cfg: SweepConfig, folder: Path, points: list[Point], stored: dict[str, PointResult] | None = None
                 ) -> list[PointState]:
    """Each point's state, from its run folder (``point.json``, ``last.pt``, ``metrics.jsonl``), the
    sweep's ``results.jsonl`` and, for its last job in ``jobs.json``, the scheduler."""
    from ...runtime.metrics import read_rows

    stored = load_results(folder) if stored is None else stored
    jobs = read_jobs(folder)
    out = []
    for p in points:
        st = PointState(p, "pending")
        out.append(st)
        if p.error is not None:
            st.state = "invalid"
            continue
        history = jobs.points.get(p.name) or []
        if history:
            last = history[-1]
            st.job_id = last.job_id
            st.scheduler = job_state(last.launcher, folder / jobs.folder, last.job_id)
        rows = read_rows(p.run / "metrics.jsonl") if (p.run / "metrics.jsonl").is_file() else []
        train = [r for r in rows if "split" not in r]
        test = [r for r in rows if r.get("split") == "test" and "alongside" not in r]
        if train:
            st.step, st.train_bpd = train[-1]["step"], train[-1].get("bpd")
        if test:
            st.test_bpd = test[-1]["bpd"]
        row = _point_row(p, stored)
        if row is not None and row.status == "done":
            st.state, st.row = "done", row
            st.step = row.steps
            st.test_bpd = row.iw_bpd if row.iw_bpd is not None else row.elbo_bpd
        elif st.scheduler in LIVE_STATES:
            st.state = "queued" if st.scheduler in ("PENDING", "SUBMITTED", "REQUEUED") and not rows else "running"
        elif row is not None:
            st.state, st.row = "failed", row
        elif (p.run / "checkpoints" / "last.pt").is_file():
            st.state = "interrupted"
        elif history:
            st.state = "failed"
    return out


def _point_row(p: Point, stored: dict[str, PointResult]) -> PointResult | None:
    path = p.run / "point.json"
    if path.is_file():
        try:
            return PointResult.model_validate_json(path.read_text())
        except ValueError:
            pass
    return stored.get(p.name)


# ----------------------------------------------------------------------------- the sweep
def run_scheduled_sweep(cfg: SweepConfig, folder: Path, existing: bool, err, settings: LauncherSettings,
                        wait: bool, dry_run: bool = False):
    """Check the points, submit those not done and not queued or running (one job array), record the
    job ids; ``wait``: until no point's job is live; then collect the results. Returns a SweepOutcome.
    ``dry_run``: write submitit's sbatch script (``SWEEP/jobs/dry-run.sbatch``), submit nothing."""
    from .runs import SweepOutcome

    say = (lambda text: err.print(text, markup=False, highlight=False, soft_wrap=True))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "sweep.json", cfg.model_dump_json(indent=2))
    except OSError as e:
        raise SweepError(f"cannot write the sweep folder {folder}: {e.strerror or e}") from None
    points = points_of(Grid(cfg.axes, cfg.fixed), folder)
    check_points(points, cfg)
    states = point_states(cfg, folder, points)
    counts: dict[str, int] = {}
    for st in states:
        counts[st.state] = counts.get(st.state, 0) + 1
    say(f"sweep folder: {folder}{' (continuing)' if existing else ''}; launcher {settings.kind}")
    say("points: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    for st in states:
        if st.state == "invalid":
            say(f"  invalid, skipped: {st.name}: {st.point.error}")
    todo = [st for st in states if st.state in ("pending", "interrupted", "failed")]
    jobs_dir = folder / read_jobs(folder).folder
    name = f"augflow-{cfg.spec_name}"
    if dry_run:
        script = sbatch_script(settings, jobs_dir, name, count=max(1, len(todo)))
        write_atomic(jobs_dir / "dry-run.sbatch", script)
        say(f"dry run: {len(todo)} point(s) would be submitted with {jobs_dir / 'dry-run.sbatch'}:\n{script}")
    elif todo:
        ex = executor_for(settings, jobs_dir, name)
        calls = [_job(cfg, st.point, settings) for st in todo]
        ids = submit_jobs(ex, calls)
        record = read_jobs(folder)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for st, job_id in zip(todo, ids):
            record.points.setdefault(st.name, []).append(JobRecord(job_id=job_id, launcher=settings.kind,
                                                                   submitted=now))
            how = {"pending": "submitted", "interrupted": "resubmitted (resumes from last.pt)",
                   "failed": "resubmitted"}[st.state]
            say(f"  {st.name}: {how} as job {job_id}")
        write_atomic(folder / JOBS, record.model_dump_json(indent=2))
    if wait and not dry_run:
        states = _wait(cfg, folder, points, say)
    else:
        states = point_states(cfg, folder, points)
    rows = collect(cfg, folder, states)
    done = sum(st.state == "done" for st in states)
    return SweepOutcome(save(cfg, folder, rows, None, plot=done > 0), folder, None,
                        any(p.error is None for p in points))


def _job(cfg: SweepConfig, p: Point, settings: LauncherSettings) -> PointJob:
    opts = asdict(train_options(cfg, p.run))
    if settings.gpus_per_node and not cfg.options.get("device"):
        opts["device"] = "cuda"
    return PointJob(spec_text=cfg.spec_text, spec_file=cfg.spec_file, variables=p.variables, train_over=p.train,
                    options=opts, threads=cfg.options.get("threads"), name=p.name, settings=p.settings, parameters=p.parameters,
                    samples=cfg.samples, cfg=cfg)


def _wait(cfg: SweepConfig, folder: Path, points: list[Point], say, poll: float = 1.0) -> list[PointState]:
    """Poll until no point's job is queued or running (SIGINT stops waiting; the jobs go on)."""
    shown: dict[str, str] = {}
    old = signal.getsignal(signal.SIGINT)
    stop = {"flag": False}

    def on_int(signum, frame):  # noqa: ARG001
        stop["flag"] = True

    try:
        signal.signal(signal.SIGINT, on_int)
    except ValueError:  # not the main thread
        pass
    try:
        while True:
            states = point_states(cfg, folder, points)
            for st in states:
                if st.state != "invalid" and shown.get(st.name) != st.state:
                    shown[st.name] = st.state
                    say(f"  {st.name}: {st.state}" + (f" (job {st.job_id})" if st.job_id else ""))
            if stop["flag"] or not any(st.state in ("queued", "running") for st in states):
                return states
            time.sleep(poll)
    finally:
        try:
            signal.signal(signal.SIGINT, old)
        except ValueError:
            pass


def collect(cfg: SweepConfig, folder: Path, states: list[PointState]) -> dict[str, PointResult]:
    """The rows of the table from the points' states; a newly finished point's row joins results.jsonl."""
    stored = load_results(folder)
    rows: dict[str, PointResult] = {}
    for st in states:
        p = st.point
        if st.row is not None:
            rows[p.name] = st.row.model_copy(update={"parameters": p.parameters, "run": str(p.run)})
            if st.row.status == "done" and (p.name not in stored or stored[p.name].status != "done"):
                append_result(folder, rows[p.name])
            continue
        status = {"invalid": "invalid", "queued": "queued", "running": "running",
                  "interrupted": "interrupted", "failed": "failed"}.get(st.state, "pending")
        rows[p.name] = PointResult(name=p.name, settings=p.settings, run=str(p.run), status=status,
                                   parameters=p.parameters, error=p.error, steps=st.step, train_bpd=st.train_bpd)
    return rows


def print_status(cfg: SweepConfig, states: list[PointState], console) -> None:
    """The ``sweep --status`` table: point, job id, state, step, bits/dim so far."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(f"sweep of {cfg.spec_name}: status"), header_style="bold")
    for c, j in (("point", "left"), ("job id", "right"), ("state", "left"), ("step", "right"),
                 ("train bits/dim", "right"), ("test bits/dim", "right")):
        t.add_column(c, justify=j)
    style = {"done": "green", "running": "cyan", "queued": "blue", "interrupted": "yellow", "failed": "red",
             "invalid": "dim", "pending": "dim"}

    def f(v):
        return "-" if v is None else f"{v:.4f}"

    for st in states:
        shown = (st.scheduler or "").lower()
        state = st.state + (f" ({shown})" if shown and shown != st.state and st.state not in ("done", "invalid")
                            else "")
        t.add_row(escape(st.name), st.job_id or "-", f"[{style[st.state]}]{escape(state)}[/]",
                  "-" if st.step is None else str(st.step), f(st.train_bpd), f(st.test_bpd))
    console.print(t)
    console.print("test bits/dim: the final evaluation (IW where S > 1) of a done point, else the last "
                  "in-training one", style="dim")


def sweep_status(folder: Path) -> tuple[SweepConfig, list[PointState]]:
    """The states of the sweep in ``folder`` (``sweep --status``)."""
    from .folder import _read_config

    cfg = _read_config(folder)
    if cfg is None:
        raise SweepError(f"{folder} is not a sweep folder (no sweep.json)")
    points = points_of(Grid(cfg.axes, cfg.fixed), folder)
    check_points(points, cfg)  # analytic: marks the invalid points
    return cfg, point_states(cfg, folder, points)


__all__ = ["JobsFile", "PointJob", "PointState", "collect", "point_states", "print_status", "read_jobs",
           "run_scheduled_sweep", "sweep_status"]
