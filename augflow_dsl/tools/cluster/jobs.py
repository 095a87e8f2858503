"""The job a launcher submits: one training run (:class:`TrainJob`), a plain picklable callable that
submitit runs in each task of the job. It joins the job's process group (several tasks: DDP from
submitit's task environment), trains with the runtime's Trainer in the run folder and, when SLURM
preempts it or its time limit nears, checkpoints and requeues itself through submitit's checkpointing
hook (:meth:`TrainJob.checkpoint`)."""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


@dataclass
class TrainJob:
    """Train the spec ``spec_text`` (with its ``let`` and ``train.KEY`` overrides) into ``options["run"]``
    with the runtime's TrainOptions ``options``; a rerun of the same job resumes from ``last.pt``."""

    spec_text: str
    spec_file: str
    variables: dict[str, Any]
    train_over: dict[str, Any]
    options: dict[str, Any]
    threads: int | None = None       # torch intra-op threads of each task (None: torch's default)
    attempts: int = field(default=0)

    @property
    def run(self) -> Path:
        return Path(self.options["run"])

    # ---------------------------------------------------------------- in the job
    def __call__(self) -> dict[str, Any]:
        from ...language.load import loads
        from ...runtime.train import Trainer, TrainOptions

        env = _job_environment()
        rank = env.global_rank if env is not None else 0
        if env is not None and env.num_tasks > 1:
            from submitit.helpers import TorchDistributedEnvironment
            TorchDistributedEnvironment().export(set_cuda_visible_devices=False)  # RANK, WORLD_SIZE, MASTER_*
        if self.threads:
            import torch
            torch.set_num_threads(int(self.threads))
        self.attempts += 1
        if rank == 0:
            self.run.mkdir(parents=True, exist_ok=True)
            _record_attempt(self.run, env, self.attempts)
        spec = loads(self.spec_text, self.spec_file, self.variables)
        if self.options.get("data"):  # --data: the run's own data, located as train locates it
            from ...runtime.launch import locate_data
            spec = locate_data(spec, self.options["data"])
        opts = TrainOptions(**{k: v for k, v in self.options.items() if k in TrainOptions.__dataclass_fields__})
        log_every = opts.log_every

        def on_progress(step, total, loss, bpd, ips):
            if rank == 0 and (step % log_every == 0 or step == total):
                print(f"step {step}/{total}  loss {loss:.4f}  bpd {bpd:.4f}  {ips or 0:.0f} img/s", flush=True)

        trainer = Trainer(spec, self.variables, self.train_over, opts, console=_console() if rank == 0 else None,
                          on_progress=on_progress)
        usr = _preempt_signal(env)
        submitit_handler = signal.getsignal(usr) if usr is not None else None
        got: dict[str, str] = {}

        def on_user_signal(signum, frame):  # noqa: ARG001 - checkpoint first: the Trainer stops on SIGTERM
            got["signal"] = signal.Signals(signum).name
            signal.raise_signal(signal.SIGTERM)

        if usr is not None:
            signal.signal(usr, on_user_signal)
        try:
            result = trainer.run()
        finally:
            if usr is not None:
                signal.signal(usr, submitit_handler)
        out = asdict(result)
        stopped = result.stopped
        if stopped.startswith("signal") and callable(submitit_handler) and \
                (got or (stopped == "signal SIGTERM" and env is not None and env.cluster == "slurm")):
            print(f"stopped by {got.get('signal', 'SIGTERM')} at step {result.step}; checkpoint written; "
                  f"requeuing", flush=True)
            _requeue(submitit_handler, usr)         # exits this process when the job is requeued
        if rank == 0:
            out.update(self.finished(result))
        return out

    def finished(self, result) -> dict[str, Any]:  # noqa: ARG002 - a hook for subclasses (a sweep's point)
        """Called on rank 0 when training returned (a subclass evaluates); what it returns joins the result."""
        return {}

    # ---------------------------------------------------------------- submitit's checkpointing hook
    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit's hook, called on preemption or at the time limit: requeue this same job (which
        resumes from the run folder's ``last.pt``)."""
        from submitit.helpers import DelayedSubmission
        return DelayedSubmission(self, *args, **kwargs)


def _job_environment():
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    import submitit
    return submitit.JobEnvironment()


def _preempt_signal(env):
    """The signal submitit asks the scheduler for (SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says)."""
    if env is None:
        return None
    return env._usr_sig()


def _requeue(handler, signum) -> None:
    """Hand the stop to submitit's own handler: it calls :meth:`TrainJob.checkpoint`, stores the job it
    returns and requeues it (``scontrol requeue``; a local job exits with submitit's requeue code)."""
    import subprocess
    try:
        handler(signum, None)
    except subprocess.CalledProcessError as e:  # e.g. a cancelled job that SLURM will not requeue
        print(f"not requeued: {e}", file=sys.stderr, flush=True)


def _console():
    from ...errors import SafeConsole as Console
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _record_attempt(run: Path, env, attempt: int) -> None:
    """Append this attempt (job id, host, pid, start time) to ``RUN/job.json``."""
    path = run / "job.json"
    rows = read_attempts(run)
    rows.append({"job_id": env.job_id if env is not None else None, "attempt": attempt,
                 "host": socket.gethostname(), "pid": os.getpid(),
                 "started": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    tmp = path.with_name(".job.json.tmp")
    tmp.write_text(json.dumps(rows, indent=2))
    tmp.replace(path)


def read_attempts(run: Path) -> list[dict[str, Any]]:
    """The attempts recorded in ``RUN/job.json`` (empty when none)."""
    try:
        rows = json.loads((Path(run) / "job.json").read_text())
    except (OSError, ValueError):
        return []
    return rows if isinstance(rows, list) else []





def submit_run(setup, settings, wait: bool) -> tuple[str, Path, dict[str, Any] | None]:
    """Submit one training run (a :class:`~augflow_dsl.runtime.launch.TrainSetup`) as a job with the
    launcher ``settings``; submitit's files go to ``RUN/jobs/``. Returns the job id, its log and, when
    ``wait``, the job's result (the RunResult's fields)."""
    from .executor import executor_for, job_log, submit_jobs

    opts = asdict(setup.opts)
    if settings.gpus_per_node and not str(opts.get("device") or "cpu").startswith("cuda"):
        opts["device"] = "cuda"
    job = TrainJob(spec_text=setup.spec.text, spec_file=setup.spec.file, variables=dict(setup.variables),
                   train_over=dict(setup.train_over), options=opts)
    folder = job.run / "jobs"
    ex = executor_for(settings, folder, f"augflow-{setup.spec.name}")
    (job_id,) = submit_jobs(ex, [job])
    if not wait:
        return job_id, job_log(folder, job_id), None
    from .executor import _LOCAL_JOBS
    handle = _LOCAL_JOBS.get(job_id)
    if handle is None:
        import submitit
        handle = submitit.SlurmJob(folder=folder, job_id=job_id)
    return job_id, job_log(folder, job_id), handle.result()
__all__ = ["TrainJob", "read_attempts", "submit_run"]
