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
    columns when standard output is not a terminal."""
    from rich.console import Console
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)


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
            print(f"error: no such spec file: {p}", file=sys.stderr)
        else:
            from rich.markup import escape
            err.print(f"[red]error: no such spec file: {escape(p)}[/red]")
    return bool(missing)
