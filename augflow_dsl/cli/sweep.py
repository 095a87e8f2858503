"""``augflow-dsl sweep SPEC --set growth=2,6,10 --set units=2,3``: the flags (train's and eval's own
definitions, from :func:`augflow_dsl.cli.train.add_train_flags` and
:func:`augflow_dsl.cli.eval.add_eval_flags`), a call of :func:`augflow_dsl.tools.sweep.run_sweep`, the
table (or ``--json``) printed. Exit 0 every valid point done (or stopped by a signal), 1 no valid point,
a failed point, a bad spec, data set or sweep folder, 2 usage."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import EXIT_INVALID, EXIT_OK, EXIT_USAGE, add_set_flag, console, positive_int

# train's flags a sweep takes, in its --help order, with the wording a sweep gives them (per point)
_TRAIN_FLAGS = {
    "steps": {"help": "updates per point (replaces the spec's epochs)"},
    "epochs": {"help": "epochs per point"},
    "batch": {},
    "seed": {"help": "seed of every point (default: the spec's train.seed)"},
    "precision": {},
    "device": {},
    "data": {"help": "your own data for every point: an image folder (a subfolder per class gives labels) or a "
                     ".npz file; replaces the spec's data set and data.path (a relative data.path is read from "
                     "the spec file's folder)"},
    "data_root": {},
    "download": {},
    "compile": {},
    "checkpoint_every": {},
    "log_every": {},
    "eval_every": {"help": "steps between in-training test evaluations"},
    "eval_images": {"help": "test images per in-training evaluation (1000)"},
    "workers": {},
    "tensorboard": {"help": "write no TensorBoard event files (default: one tb/ folder per point, so "
                            "tensorboard --logdir SWEEP compares them)"},
}
# eval's flags: the importance samples of each point's evaluation (default: the spec's eval_samples)
_EVAL_FLAGS = {
    "samples": {"default": None, "help": "importance samples of each point's test evaluation (default: the "
                                         "spec's train.eval_samples; 1: the one-sample ELBO only)"},
}


class _Only:
    """Stands for a parser in another command's ``add_*_flags(p)``: passes on to ``target`` the flags
    whose dest is in ``wanted`` (with its changes), and drops the others; a mutually exclusive group
    stays one."""

    def __init__(self, target, wanted: dict[str, dict]):
        self.target, self.wanted = target, wanted

    def add_argument(self, *names, **kw):
        dest = kw.get("dest") or next((n for n in names if n.startswith("--")), names[0]).lstrip("-").replace("-", "_")
        if dest in self.wanted:
            return self.target.add_argument(*names, **{**kw, **self.wanted[dest]})
        return None

    def add_mutually_exclusive_group(self, **kw):
        return _Only(self.target.add_mutually_exclusive_group(**kw), self.wanted)

    def add_argument_group(self, *a, **kw):  # noqa: ARG002 - the sweep's help keeps one list
        return self


def register(sub) -> None:
    from .eval import add_eval_flags
    from .launchers import add_launcher_flags
    from .train import add_train_flags

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
    add_train_flags(_Only(p, _TRAIN_FLAGS))
    add_eval_flags(_Only(p, _EVAL_FLAGS))
    p.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--status", metavar="SWEEP_DIR",
                   help="print each point's state (job id, state, step, bits/dim so far) and exit")
    add_launcher_flags(p)
    add_set_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import SpecError
    from ..compiler.model_file import ModelFileError
    from ..runtime.data import DataError
    from ..runtime.train import TrainError
    from ..tools.sweep import (IDENTITY_FLAGS, OPTION_FLAGS, SweepError, SweepUsageError, print_table, run_sweep,
                               sweep_config)

    from ..tools.cluster import LauncherError
    from ..tools.sweep.scheduled import print_status, run_scheduled_sweep, sweep_status
    from .launchers import LauncherUsage, launcher_settings

    err = console(stderr=True)
    say = (lambda text: err.print(text, markup=False, highlight=False, soft_wrap=True))
    settings = None
    try:
        if args.status:
            if args.spec or args.set or args.resume:
                raise SweepUsageError("--status SWEEP_DIR reads the sweep folder; drop SPEC, --set and --resume")
            cfg, states = sweep_status(Path(args.status))
            print_status(cfg, states, console())
            return EXIT_OK
        cfg, folder, existing = sweep_config(
            args.spec, args.set, resume=args.resume, out=args.out,
            train={k: getattr(args, k) for k in IDENTITY_FLAGS}, samples=args.samples,
            options={k: getattr(args, k, None) for k in OPTION_FLAGS})
        settings = launcher_settings(args, cfg.options.get("launcher"))
        if settings is None:
            cfg.options.pop("launcher", None)
            outcome = run_sweep(cfg, folder, existing, err, quiet=args.json)
        else:
            cfg.options["launcher"] = settings.model_dump()
            wait = args.wait if args.wait is not None else settings.kind == "submitit-local"
            outcome = run_scheduled_sweep(cfg, folder, existing, err, settings, wait=wait, dry_run=args.dry_run)
    except (SweepUsageError, LauncherUsage) as e:
        err.print(f"usage error: {e}", markup=False, soft_wrap=True)
        return EXIT_USAGE
    except (SpecError, ModelFileError, DataError, TrainError, SweepError, LauncherError) as e:
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        return EXIT_INVALID
    if args.json:
        print(outcome.result.model_dump_json())
    elif not args.dry_run:
        print_table(outcome.result, cfg, console())
        say(f"table: {folder / 'table.md'}   plot: {folder / 'plot.png'}   results: {folder / 'results.json'}")
    if outcome.stopped:
        say(f"stopped by {outcome.stopped[7:]}; the interrupted point's checkpoint is kept. Continue with: "
            f"augflow-dsl sweep --resume {folder}")
        return EXIT_OK
    if settings is not None:
        states = {r.name: r.status for r in outcome.result.points}
        live = [n for n, st in states.items() if st in ("queued", "running")]
        left = [n for n, st in states.items() if st in ("interrupted", "failed", "pending")]
        if live:
            say(f"{len(live)} point(s) queued or running as jobs. Follow them with: augflow-dsl sweep --status "
                f"{folder}; rerun the sweep (augflow-dsl sweep --resume {folder}) to collect them")
        if left and not args.dry_run:
            say(f"{len(left)} point(s) not done ({', '.join(left)}); rerun the sweep to resubmit them: "
                f"augflow-dsl sweep --resume {folder}")
            return EXIT_INVALID
        if live or args.dry_run:
            return EXIT_OK
    if not outcome.any_valid:
        say("error: no point of the grid is valid; nothing was trained")
        return EXIT_INVALID
    if outcome.failed:
        say(f"error: {len(outcome.failed)} point(s) failed: {', '.join(outcome.failed)}")
        return EXIT_INVALID
    return EXIT_OK
