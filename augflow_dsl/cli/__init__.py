"""``augflow-dsl``: the root parser and ``main``; each command is a module of this package with
``register(sub)`` (its subparser, ``set_defaults(func=run)``) and ``run(args) -> int``.

Exit codes: 0 success / valid spec, 1 invalid spec, 2 usage error (missing file, unknown
option), 130 interrupted. ``check``, ``graph``, ``ops``, ``solve`` and ``diff`` never import torch:
no command module imports it before its ``run``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import SpecError
from .common import EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, ArgumentParser

# command -> its module in this package, in the order `augflow-dsl --help` lists them
COMMANDS = {
    "check": "check",
    "graph": "graph",
    "compile": "compile",
    "bench": "bench",
    "train": "train",
    "eval": "eval",
    "sample": "sample",
    "ops": "ops",
    "import": "import_weights",
    "solve": "solve",
    "diff": "diff",
    "draw": "draw",
    "sweep": "sweep",
    "export": "export",
}

# Commands whose subparser stands alone: `augflow-dsl solve ...` builds only its own parser, so it
# imports no other command's module (its start-up time is part of its contract, issue 13).
LEAN = ("solve",)

def _register(sub, command: str) -> None:
    importlib.import_module(f"{__package__}.{COMMANDS[command]}").register(sub)


def _root() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The top-level parser and its (empty) subcommand set."""
    from .. import __version__
    ap = ArgumentParser(prog="augflow-dsl", description="A declarative compiler for augmented normalizing "
                                 "flows.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return ap, ap.add_subparsers(dest="command", required=True)


def build_parser(commands=None) -> argparse.ArgumentParser:
    """The root parser with the subparsers of ``commands`` (default: every command)."""
    ap, sub = _root()
    for command in commands or COMMANDS:
        _register(sub, command)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = build_parser([argv[0]] if argv and argv[0] in LEAN else None)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except SpecError as e:
        print(str(e), file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
