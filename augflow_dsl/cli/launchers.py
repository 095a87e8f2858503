"""The ``--launcher`` flags that ``train`` and ``sweep`` share (scheduled jobs through submitit,
:mod:`augflow_dsl.tools.cluster`), their settings, and ``train --launcher``'s submission of one run."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import EXIT_INVALID, EXIT_OK, EXIT_USAGE, positive_int


def _nonnegative_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0; got {text!r}")
    return n


def add_launcher_flags(p, what: str = "point") -> None:
    """``--launcher`` and its SLURM settings, shared by ``sweep`` and ``train``."""
    g = p.add_argument_group("scheduled jobs (submitit: pip install 'augflow-dsl[cluster]')")
    g.add_argument("--launcher", choices=("local", "submitit", "submitit-local"), default=None,
                   help=f"local (default): train in this process; submitit: each {what} a SLURM job (a job array "
                        f"where there are several); submitit-local: submitit's local executor (real processes, "
                        f"no scheduler)")
    g.add_argument("--partition", help="SLURM partition")
    g.add_argument("--gpus-per-node", type=_nonnegative_int, default=None,
                   help="GPUs per node, one DDP process each (default 0: a CPU job)")
    g.add_argument("--nodes", type=positive_int, default=None, help=f"nodes per {what} (1)")
    g.add_argument("--time", default=None, help="time limit, HH:MM:SS or D-HH:MM:SS (24:00:00)")
    g.add_argument("--cpus-per-task", type=positive_int, default=None, help="CPUs per task (per GPU)")
    g.add_argument("--mem", default=None, help="memory per node, e.g. 64G")
    g.add_argument("--array-parallelism", type=positive_int, default=None,
                   help="jobs of an array running at once (256)")
    g.add_argument("--slurm-extra", action="append", default=None, metavar="KEY=VALUE",
                   help="another #SBATCH --KEY=VALUE line (repeatable), e.g. account=proj1, qos=high")
    g.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                   help="wait for the jobs to end (default: with submitit-local; a SLURM submission returns)")
    g.add_argument("--dry-run", action="store_true",
                   help="with --launcher submitit: write and print submitit's sbatch script, submit nothing")


_SLURM_FLAGS = ("partition", "gpus_per_node", "nodes", "time", "cpus_per_task", "mem", "array_parallelism")


def launcher_settings(args: argparse.Namespace, stored: dict | None = None):
    """The LauncherSettings the flags give (over ``stored``, a sweep's earlier ones), or None for local."""
    from ..tools.cluster import LauncherSettings
    from ..tools.cluster.settings import parse_extra

    kind = args.launcher or (stored or {}).get("kind") or "local"
    if kind == "local":
        given = [f"--{k.replace('_', '-')}" for k in (*_SLURM_FLAGS, "slurm_extra", "dry_run")
                 if getattr(args, k, None) not in (None, False)]
        if given:
            raise LauncherUsage(f"{', '.join(given)} need --launcher submitit or submitit-local")
        return None
    values = {**(stored or {}), "kind": kind}
    values.update({k: getattr(args, k) for k in _SLURM_FLAGS if getattr(args, k, None) is not None})
    from ..tools.cluster import LauncherError
    try:
        if args.slurm_extra:
            values["extra"] = {**values.get("extra", {}), **parse_extra(args.slurm_extra)}
        return LauncherSettings(**values).checked()
    except (ValueError, LauncherError) as e:
        raise LauncherUsage(f"launcher settings: {e}") from None


class LauncherUsage(Exception):
    """Launcher flags that do not go together (exit 2)."""


def launch_run(setup, args: argparse.Namespace, err) -> int | None:
    """``train --launcher submitit|submitit-local``: submit the set-up run as one job and report it
    (waiting for it with submitit-local or --wait); None for ``--launcher local`` (train here)."""
    from ..tools.cluster import LauncherError, submit_run

    if getattr(args, "launcher", None) in (None, "local"):  # compile --train has no launcher flags
        return None
    try:
        settings = launcher_settings(args)
    except LauncherUsage as e:
        err.print(f"usage error: {e}", markup=False, soft_wrap=True)
        return EXIT_USAGE
    if settings is None:
        return None
    if args.dry_run:
        from ..tools.cluster import sbatch_script
        print(sbatch_script(settings, Path(setup.opts.run) / "jobs", f"augflow-{setup.spec.name}"))
        return EXIT_OK
    wait = args.wait if args.wait is not None else settings.kind == "submitit-local"
    try:
        job_id, log, result = submit_run(setup, settings, wait)
    except LauncherError as e:
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        return EXIT_INVALID
    say = (lambda text: err.print(text, markup=False, highlight=False, soft_wrap=True))
    say(f"submitted job {job_id} ({settings.kind}); run folder {setup.opts.run}; log {log}; "
        f"TensorBoard: tensorboard --logdir {Path(setup.opts.run) / 'tb'}")
    if result is None:
        return EXIT_OK
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "point"}))
    else:
        say(f"job {job_id}: {result['stopped']} at step {result['step']}; train bits/dim {result['train_bpd']}; "
            f"test bits/dim {result['test_bpd']}")
    return EXIT_OK if result["stopped"] != "bad steps" else EXIT_INVALID
