"""submitit's executors set up from :class:`LauncherSettings`, the sbatch script submitit writes (read
without submitting: ``--dry-run`` and tests), submission (a job array where there are several jobs) and
a job's state as the scheduler knows it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .settings import LauncherError, LauncherSettings, parse_time

# scheduler states of a job that still holds (or waits for) resources: its point is not resubmitted
LIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
                         "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "READY", "SUBMITTED"})

# time limits a run may reach and still be requeued (submitit's default is 3): a long run continues over as
# many allocations as it needs; preemptions do not count
MAX_TIMEOUTS = 100

# the jobs this process submitted through the local executor, by id: their process handle tells their state
_LOCAL_JOBS: dict[str, Any] = {}


def _submitit():
    try:
        import submitit
    except ImportError:
        raise LauncherError("the submitit launchers need submitit: pip install 'augflow-dsl[cluster]'") from None
    return submitit


def _slurm_parameters(s: LauncherSettings, name: str) -> dict[str, Any]:
    params: dict[str, Any] = {"job_name": name, "time": parse_time(s.time), "nodes": s.nodes,
                              "ntasks_per_node": s.tasks_per_node, "array_parallelism": s.array_parallelism,
                              "stderr_to_stdout": False}
    if s.gpus_per_node:
        params["gpus_per_node"] = s.gpus_per_node
    for key in ("partition", "cpus_per_task", "mem"):
        if getattr(s, key) is not None:
            params[key] = getattr(s, key)
    if s.extra:
        params["additional_parameters"] = dict(s.extra)
    return params


def executor_for(settings: LauncherSettings, folder: Path, name: str, plan_only: bool = False):
    """submitit's executor for ``settings`` with its job files in ``folder``; ``plan_only``: a SLURM
    executor that only writes scripts (works where SLURM is not installed)."""
    submitit = _submitit()
    settings = settings.checked()
    folder.mkdir(parents=True, exist_ok=True)
    if settings.kind == "submitit-local":
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=MAX_TIMEOUTS)
        ex.update_parameters(timeout_min=parse_time(settings.time), tasks_per_node=settings.tasks_per_node,
                             gpus_per_node=settings.gpus_per_node, nodes=1)
        return ex
    cls = _planner() if plan_only else submitit.SlurmExecutor
    try:
        ex = cls(folder=folder, max_num_timeout=MAX_TIMEOUTS)
    except RuntimeError as e:  # no srun on this machine
        raise LauncherError(f"--launcher submitit: {e} (use --launcher submitit-local on a workstation, or "
                            f"--dry-run to write the sbatch script only)") from None
    try:
        ex.update_parameters(**_slurm_parameters(settings, name))
    except ValueError as e:
        raise LauncherError(f"SLURM settings: {str(e).splitlines()[0]}") from None
    return ex


def _planner():
    from submitit import SlurmExecutor

    class SlurmPlanner(SlurmExecutor):
        """submitit's SLURM executor where SLURM is not installed: it writes scripts, never submits."""

        @classmethod
        def affinity(cls) -> int:
            return 2

    return SlurmPlanner


def sbatch_script(settings: LauncherSettings, folder: Path, name: str, count: int = 1) -> str:
    """The sbatch script submitit writes for ``count`` jobs with ``settings`` (a job array when
    ``count`` > 1), exactly as :func:`submit_jobs` would submit it; nothing is submitted."""
    ex = executor_for(settings.model_copy(update={"kind": "submitit"}), folder, name, plan_only=True)
    if count > 1:
        ex.parameters["map_count"] = count
    return ex._make_submission_file_text(ex._submitit_command_str, "plan")


def submit_jobs(ex, calls: list) -> list[str]:
    """Submit each callable of ``calls`` (one job array where there are several and the executor
    makes arrays); their job ids, in order."""
    if len(calls) == 1:
        jobs = [ex.submit(calls[0])]
    else:
        with ex.batch():
            delayed = [ex.submit(c) for c in calls]
        jobs = list(delayed)
    for j in jobs:
        if getattr(j, "_process", None) is not None:
            _LOCAL_JOBS[str(j.job_id)] = j
    return [str(j.job_id) for j in jobs]


def job_log(folder: Path, job_id: str) -> Path:
    """The job's standard output (submitit's log of task 0)."""
    from submitit.core.utils import JobPaths
    return JobPaths(folder, job_id=job_id, task_id=0).stdout


def job_state(kind: str, folder: Path, job_id: str) -> str:
    """The scheduler's state of a job: SLURM's (``sacct``: PENDING, RUNNING, COMPLETED, FAILED,
    PREEMPTED, TIMEOUT, CANCELLED, NODE_FAIL, OUT_OF_MEMORY...), or for a local job RUNNING, COMPLETED
    (it returned), FAILED (it raised) or INTERRUPTED (its process is gone without a result); UNKNOWN
    where the scheduler cannot say."""
    submitit = _submitit()
    if kind == "submitit":
        try:
            state = submitit.SlurmJob(folder=folder, job_id=job_id).state
        except Exception:  # noqa: BLE001 - sacct missing or failing: the run folder still tells the step
            return "UNKNOWN"
        return str(state).split()[0].upper()
    job = _LOCAL_JOBS.get(job_id)
    if job is not None and job._process is not None and job._process.poll() is None:
        return "RUNNING"
    from submitit.core.utils import JobPaths
    result = JobPaths(folder, job_id=job_id, task_id=0).result_pickle
    if result.exists():
        try:
            import pickle
            with result.open("rb") as f:
                outcome = pickle.load(f)[0]
        except Exception:  # noqa: BLE001 - a torn result file
            return "UNKNOWN"
        return "COMPLETED" if outcome == "success" else "FAILED"
    if job is None and _alive(int(job_id)):
        return "RUNNING"
    return "INTERRUPTED"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, OverflowError):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


__all__ = ["LIVE_STATES", "executor_for", "job_log", "job_state", "sbatch_script", "submit_jobs"]
