"""``augflow-dsl train`` (and ``compile --train``): the command-line face of runtime.train.

Exit codes: 0 done (or stopped cleanly by SIGTERM / SIGINT with a checkpoint written), 1 a bad spec,
data set, checkpoint or run folder, or a run stopped by non-finite steps, 2 usage.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import EXIT_INVALID, EXIT_USAGE, add_set_flag, positive_int

# train: keys a --set may reach as train.KEY=VALUE are TrainSpec's fields (checked by pydantic)


def add_train_flags(p: argparse.ArgumentParser) -> None:
    """The flags of a training run, shared by ``train`` and ``compile --train``."""
    p.add_argument("--run", "--run-dir", dest="run",
                   help="run folder (default: runs/<spec name>/<UTC time>/); an existing one resumes. Under "
                        "torchrun write --run-dir: torchrun's own parser takes --run as its --run-path")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=positive_int, help="train this many updates in all (replaces the spec's epochs; its fine-tune epochs "
                                                          "run only with --set train.finetune_epochs=K)")
    g.add_argument("--epochs", type=positive_int, help="train this many epochs in all (fine-tune epochs as for --steps)")
    p.add_argument("--batch", type=positive_int, help="global batch (default: the spec's train.batch)")
    p.add_argument("--device", default=None, help="cpu (default) or cuda / cuda:N")
    p.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                   help="bf16: the coupling and context nets under autocast (flow arithmetic stays float32)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the nets (regional)")
    p.add_argument("--data-root", default=None, help="where data sets are read from (and downloaded to)")
    p.add_argument("--data", metavar="PATH", default=None,
                   help="your own data: an image folder (a subfolder per class gives labels) or a .npz file "
                        "(x, optional y, x_test, y_test); replaces the spec's data set and data.path")
    p.add_argument("--download", action="store_true", default=None, help="download a missing torchvision data set")
    p.add_argument("--seed", type=int, default=None, help="seed (default: the spec's train.seed)")
    p.add_argument("--checkpoint-every", type=positive_int, default=None, help="steps between checkpoints (1000)")
    p.add_argument("--log-every", type=positive_int, default=None, help="steps between metrics rows (50)")
    p.add_argument("--eval-every", type=positive_int, default=None, help="steps between test evaluations (default: an epoch, at most ~10 per run)")
    p.add_argument("--eval-images", type=positive_int, default=None, help="test images per evaluation (1000)")
    p.add_argument("--eval-raw", action="store_true", default=None,
                   help="when the spec keeps an EMA (train.ema), evaluate the raw weights too, on the same "
                        "images and noise: a second test row and curve (the EMA's picks best.pt)")
    p.add_argument("--max-bad-steps", type=positive_int, default=None,
                   help="stop after this many non-finite or diverged steps in a row (20)")
    p.add_argument("--diverge-factor", type=float, default=None, metavar="F",
                   help="a step loss above m + F * max(|m|, 1) bits/dim, m the median of the last 100 healthy "
                        "losses, is diverged: its update is skipped, and weights that score so are never "
                        "checkpointed (1: twice the median)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads (default: torch's; recorded in the run and set again on resume, where "
                        "another count is allowed but is not bit-identical)")
    p.add_argument("--workers", type=int, default=None, help="data-loading worker processes (0)")
    p.add_argument("--force", action="store_true", default=None,
                   help="load a checkpoint of another spec where names and shapes match")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=None,
                   help="write no TensorBoard event files (default: RUN/tb/)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


OPTION_FLAGS = ("steps", "epochs", "batch", "device", "precision", "compile", "data_root", "data", "download", "seed",
                "checkpoint_every", "log_every", "eval_every", "eval_images", "eval_raw", "max_bad_steps",
                "workers", "force", "tensorboard", "threads", "diverge_factor")


def register(sub) -> None:
    p = sub.add_parser("train", help="train a spec (one device, or many under torchrun)")
    p.add_argument("spec", nargs="?", help="the .flow spec (omit with --resume)")
    p.add_argument("--resume", metavar="RUN",
                   help="continue the run in this folder with its own spec and settings; it may change "
                        "--steps / --epochs and --set train.lr / train.clip / train.warmup / train.steps "
                        "(recorded in config.json as a change at the checkpoint's step)")
    add_train_flags(p)
    add_set_flag(p)
    from .launchers import add_launcher_flags
    add_launcher_flags(p, what="run")
    p.set_defaults(func=run)


class _Usage(Exception):
    pass


def _console():
    from ..errors import SafeConsole as Console
    return Console(stderr=True, highlight=False)


def run(args) -> int:
    from ..errors import SpecError
    from ..language.evaluate import split_overrides
    from ..compiler.model_file import ModelFileError
    from ..runtime.data import DataError
    from ..runtime.launch import RESUME_MAY_CHANGE, InvalidSpec, NotARunFolder, new_run, resume_run
    from ..runtime.train import TrainError

    err = _console()
    try:
        given = {k: getattr(args, k) for k in OPTION_FLAGS if getattr(args, k, None) is not None}
        if args.resume:
            if args.spec:
                raise _Usage("--resume takes the spec from the run folder; drop SPEC")
            try:
                variables, train_changes = split_overrides(args.set)
            except SpecError as e:
                raise _Usage(str(e)) from None
            if variables:
                raise _Usage("--resume keeps the run's spec variables; it may --set only train.lr, train.clip, "
                             "train.warmup, train.steps")
            if args.run and Path(args.run) != Path(args.resume):
                raise _Usage("--resume RUN already names the run folder; drop --run")
            refused = sorted(set(given) - RESUME_MAY_CHANGE)
            if refused:
                raise _Usage("--resume keeps the run's settings; these cannot change: "
                             + ", ".join("--" + k.replace("_", "-") for k in refused))
            try:
                setup = resume_run(args.resume, given, train_changes)
            except NotARunFolder as e:
                err.print(f"error: {e}", markup=False)
                return EXIT_INVALID
        else:
            if not args.spec:
                raise _Usage("train needs a SPEC (or --resume RUN)")
            if not Path(args.spec).is_file():
                raise _Usage(f"no such spec file: {args.spec}")
            try:
                variables, train_over = split_overrides(args.set)
            except SpecError as e:
                raise _Usage(str(e)) from None
            try:
                setup = new_run(args.spec, variables, train_over, given, args.run)
            except InvalidSpec as e:
                for message in e.messages:
                    err.print(message, markup=False, soft_wrap=True)
                return EXIT_INVALID
        from .launchers import launch_run
        submitted = launch_run(setup, args, err)  # --launcher submitit / submitit-local: one job
        return submitted if submitted is not None else _train(setup, args.json, err)
    except _Usage as e:
        err.print(f"usage error: {e}", markup=False)
        return EXIT_USAGE
    except (SpecError, ModelFileError, DataError, TrainError) as e:
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        return EXIT_INVALID


def _train(setup, as_json: bool, err) -> int:
    """Run the set-up training under a progress bar (the main process only); print its result."""
    import os

    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from ..runtime.train import Trainer

    spec, opts = setup.spec, setup.opts
    main = int(os.environ.get("RANK", "0")) == 0
    show = main and not as_json and err.is_terminal
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.3f}  bpd {task.fields[bpd]:.3f}  "
                                   "{task.fields[ips]:.0f} img/s"),
                        TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                        console=err, disable=not show, transient=False)
    state = {"task": None, "t_line": 0.0}

    def on_progress(step, total, loss, bpd, ips):
        if state["task"] is None:
            state["task"] = progress.add_task(spec.name, total=total, completed=step - 1, loss=loss, bpd=bpd,
                                              ips=ips or 0.0)
        progress.update(state["task"], completed=step, loss=loss, bpd=bpd, ips=ips or 0.0)
        if main and not show and not as_json and (step % trainer.opts.log_every == 0 or step == total):
            err.print(f"step {step}/{total}  loss {loss:.4f}  bpd {bpd:.4f}  {ips or 0:.0f} img/s", markup=False)

    trainer = Trainer(spec, setup.variables, setup.train_over, opts, console=err if main else None,
                      on_progress=on_progress, analysis=setup.analysis, changes=setup.changes)
    if main and not as_json:
        err.print(f"run folder: {opts.run}", markup=False)
    with progress:
        result = trainer.run()
    if not main:
        return 0 if result.stopped != "bad steps" else 1
    if as_json:
        from dataclasses import asdict
        print(json.dumps(asdict(result)))
    else:
        _summary(result, err, trainer.train.eval_samples)
    if result.stopped == "bad steps":
        d = result.extra.get("diverged")
        what = (f"the run diverged at step {d['step']}: {d['rule']}" if d else
                f"{opts.max_bad_steps} non-finite steps in a row at step {result.step}")
        lr = trainer.train.lr
        where = (f"The last good checkpoint is {result.checkpoint}. Continue from it" if result.checkpoint else
                 "No checkpoint was written yet. Start again")
        err.print(f"error: {what}; stopped. {where} with a lower learning rate or a gradient clip: 'augflow-dsl train "
                  f"--resume {opts.run} --set train.lr={lr / 10:g}' (or --set train.clip=1)", markup=False,
                  soft_wrap=True)
        return 1
    if result.stopped.startswith("signal"):
        err.print(f"stopped by {result.stopped[7:]} at step {result.step}; checkpoint written. Continue with: "
                  f"augflow-dsl train --resume {opts.run}", markup=False, soft_wrap=True)
    return 0


def _summary(result, console, train_samples: int) -> None:
    from rich.table import Table

    t = Table(title="training run", show_header=False)
    t.add_column("")
    t.add_column("", justify="right")

    def f(v, fmt="{:.4f}"):
        return "-" if v is None else fmt.format(v)

    rows = [("run folder", result.run), ("stopped", result.stopped), ("steps", f"{result.step:,}"),
            ("epochs", str(result.epoch)), ("train bits/dim (last window)", f(result.train_bpd)),
            ("test bits/dim (last eval, ELBO)", f(result.test_bpd)), ("best test bits/dim", f(result.best_bpd)),
            *([(f"final test bits/dim (IW, S = {train_samples})", f(result.test_iw_bpd))] if train_samples > 1 else []),
            ("images/s", f(result.images_per_s, "{:.1f}")), ("time", f"{result.seconds:.1f} s"),
            ("checkpoint", result.checkpoint or "-")]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
