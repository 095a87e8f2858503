"""Training runs as scheduled jobs (issue 25) through submitit (``pip install 'augflow-dsl[cluster]'``).

* ``submitit``: submitit's SLURM executor; several runs with the same resources go as one job array
  (``#SBATCH --array=0-N%K``). A multi-GPU run is one task per GPU (``--ntasks-per-node`` = GPUs per
  node, over ``--nodes``): each task joins torch's process group from submitit's task environment
  (``submitit.helpers.TorchDistributedEnvironment``: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT),
  the DDP set-up ``torchrun`` would give it, so ``runtime.distributed.setup`` needs no change.
* ``submitit-local``: submitit's ``LocalExecutor``: real processes on this machine, no scheduler
  (tests, a workstation).
* **Preemption and time limits.** SLURM signals a job (SIGUSR2, ``--signal=USR2@90``: before its time
  limit, and at preemption where the cluster sends the user signal) and, at preemption, SIGTERM. The job
  hands either to the Trainer as SIGTERM, which checkpoints ``last.pt`` at the end of the update, then
  requeues itself through submitit's checkpointing hook (:meth:`TrainJob.checkpoint`: the same job, which
  resumes from ``last.pt``).
* Each job writes its run folder exactly as ``train`` does, plus ``job.json`` (one row per attempt: job
  id, host, process id, start time).
"""
from __future__ import annotations

from .settings import LAUNCHERS, LauncherError, LauncherSettings, parse_mem, parse_time
from .executor import (LIVE_STATES, executor_for, job_log, job_state, sbatch_script, submit_jobs)
from .jobs import TrainJob, read_attempts, submit_run

__all__ = ["LAUNCHERS", "LIVE_STATES", "LauncherError", "LauncherSettings", "TrainJob", "executor_for", "job_log",
           "job_state", "parse_mem", "parse_time", "read_attempts", "sbatch_script", "submit_jobs",
           "submit_run"]
