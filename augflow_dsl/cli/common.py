"""What every command shares: consoles, exit codes, the ``--set`` flag, count types and the
spec-file check. Imports nothing of the package above :mod:`augflow_dsl.errors`."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

EXIT_OK = 0       # success / a valid spec
EXIT_INVALID = 1  # an invalid spec, a bad checkpoint, data set or output path
EXIT_USAGE = 2    # a usage error: unknown flag, missing file
EXIT_INTERRUPTED = 130


def console(stderr: bool = False):
    """A rich console that never wraps what a user may paste back (file:line:col, paths); 160
    columns when standard output is not a terminal. Control characters in the strings it prints
    (a path or name with ESC in it) are escaped (:func:`~augflow_dsl.errors.printable`)."""
    from ..errors import SafeConsole
    return SafeConsole(stderr=stderr, highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, with control characters escaped in what it prints (usage errors echo
    the arguments: ``invalid choice: '\\x1b[2J'``); its subparsers are of this class too."""

    def _print_message(self, message: str, file=None) -> None:
        from ..errors import printable
        super()._print_message(printable(message), file)


def override(text: str) -> str:
    """argparse type of ``--set``: ``NAME=VALUE`` with NAME a name, else a usage error (exit 2)."""
    key, eq, _ = text.partition("=")
    if not eq:
        raise argparse.ArgumentTypeError(f"'{text}' must look like NAME=VALUE, e.g. --set "
                                         f"{text if text.isidentifier() else 'growth'}=6")
    name = key.strip()
    name = name[len("train."):] if name.startswith("train.") else name  # train.KEY reaches the train: block
    if not name.isidentifier():
        raise argparse.ArgumentTypeError(f"'{text}': '{key.strip()}' is not a name; write NAME=VALUE, "
                                         f"e.g. --set growth=6")
    return text


def add_set_flag(p: argparse.ArgumentParser) -> None:
    """``--set NAME=VALUE`` (repeatable): a ``let`` variable, or ``train.KEY`` of the train: block."""
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", type=override,
                   help="override a 'let' variable of the spec, or train.KEY of its train: block (repeatable)")


def positive_int(text: str) -> int:
    """argparse type of counts (--batch, --steps, ...): a whole number >= 1, else a usage error."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1; got {text!r}")
    return n


def missing_spec_files(paths: Iterable[str], err=None) -> bool:
    """Print an error for each path that is not a file (to ``err``, a console, or standard
    error); True when any is missing: the caller returns :data:`EXIT_USAGE`."""
    missing = [p for p in paths if not Path(p).is_file()]
    for p in missing:
        if err is None:
            from ..errors import printable
            print(f"error: no such spec file: {printable(p)}", file=sys.stderr)
        else:
            from rich.markup import escape
            err.print(f"[red]error: no such spec file: {escape(p)}[/red]")
    return bool(missing)


def temperature(text: str) -> float:
    """argparse type of ``--temperature``: a finite number > 0, else a usage error."""
    try:
        t = float(text)
    except ValueError:
        t = float("nan")
    if not t > 0 or t == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0; got {text!r}")
    return t


def add_checkpoint_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the commands that read a run or checkpoint (``eval``, ``sample``)."""
    p.add_argument("--no-ema", dest="ema", action="store_false",
                   help="use the trained weights even when the checkpoint has EMA weights")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    p.add_argument("--data-root", default=None, help="where data sets are read from (and downloaded to)")
    p.add_argument("--download", action="store_true", help="download a missing torchvision data set")
    p.add_argument("--seed", type=int, default=0, help="seed of the dequantization / sampling noise (0)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def progress_bar(err, show: bool):
    """A rich progress bar on ``err`` (disabled unless ``show``): description, bar, count, an
    ``info`` field, time elapsed and left."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("left"),
                    TimeRemainingColumn(), console=err, disable=not show, transient=False)
