"""``augflow-dsl sweep SPEC --set growth=2,6,10 --set units=2,3``: the flags (train's and eval's own
definitions, from :func:`augflow_dsl.cli.train.add_train_flags` and
:func:`augflow_dsl.cli.eval.add_eval_flags`), a call of :func:`augflow_dsl.tools.sweep.run_sweep`, the
table (or ``--json``) printed. Exit 0 every valid point done (or stopped by a signal), 1 no valid point,
a failed point, a bad spec, data set or sweep folder, 2 usage."""
from __future__ import annotations

import argparse

from .common import EXIT_INVALID, EXIT_OK, EXIT_USAGE, add_set_flag, console, positive_int

# train's flags a sweep takes, in its --help order, with the wording a sweep gives them (per point)
_TRAIN_FLAGS = {
    "steps": {"help": "updates per point (replaces the spec's epochs)"},
    "epochs": {"help": "epochs per point"},
    "batch": {},
    "seed": {"help": "seed of every point (default: the spec's train.seed)"},
    "precision": {},
    "device": {},
    "data_root": {},
    "download": {},
    "compile": {},
    "checkpoint_every": {},
    "log_every": {},
    "eval_every": {"help": "steps between in-training test evaluations"},
    "eval_images": {"help": "test images per in-training evaluation (1000)"},
    "workers": {},
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
    add_set_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import SpecError
    from ..compiler.model_file import ModelFileError
    from ..runtime.data import DataError
    from ..runtime.train import TrainError
    from ..tools.sweep import (IDENTITY_FLAGS, OPTION_FLAGS, SweepError, SweepUsageError, print_table, run_sweep,
                               sweep_config)

    err = console(stderr=True)
    say = (lambda text: err.print(text, markup=False, highlight=False, soft_wrap=True))
    try:
        cfg, folder, existing = sweep_config(
            args.spec, args.set, resume=args.resume, out=args.out,
            train={k: getattr(args, k) for k in IDENTITY_FLAGS}, samples=args.samples,
            options={k: getattr(args, k, None) for k in OPTION_FLAGS})
        outcome = run_sweep(cfg, folder, existing, err, quiet=args.json)
    except SweepUsageError as e:
        err.print(f"usage error: {e}", markup=False, soft_wrap=True)
        return EXIT_USAGE
    except (SpecError, ModelFileError, DataError, TrainError, SweepError) as e:
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        return EXIT_INVALID
    if args.json:
        print(outcome.result.model_dump_json())
    else:
        print_table(outcome.result, cfg, console())
        say(f"table: {folder / 'table.md'}   plot: {folder / 'plot.png'}   results: {folder / 'results.json'}")
    if outcome.stopped:
        say(f"stopped by {outcome.stopped[7:]}; the interrupted point's checkpoint is kept. Continue with: "
            f"augflow-dsl sweep --resume {folder}")
        return EXIT_OK
    if not outcome.any_valid:
        say("error: no point of the grid is valid; nothing was trained")
        return EXIT_INVALID
    if outcome.failed:
        say(f"error: {len(outcome.failed)} point(s) failed: {', '.join(outcome.failed)}")
        return EXIT_INVALID
    return EXIT_OK
