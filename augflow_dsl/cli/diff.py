"""``augflow-dsl diff A.flow [B.flow] [--set-a ...] [--set-b ...]``: a call of
:func:`augflow_dsl.tools.diff.diff_specs`, the comparison printed (a table, or ``--json``). Exit status
as diff(1): 0 the same graph, 1 different, 2 trouble. No torch."""
from __future__ import annotations

import argparse
import json
import sys

from .common import EXIT_INVALID, EXIT_OK, EXIT_USAGE, add_set_flag, override

HELP = """Compare two specs (or one spec under two sets of overrides) unit by unit: ops added, removed or
changed (with the changed arguments, old -> new), shapes, dims, parameters and MACs per unit and in total.
Units are those of 'check --summary', matched by label in order. Exit status (as diff(1)): 0 the two build
the same graph, 1 they differ, 2 trouble (a missing file, a spec that does not load or stops at a shape
error: the message is printed; a bad --set). No torch."""


def register(sub) -> None:
    p = sub.add_parser("diff", help="compare two specs unit by unit (exit 0 same graph, 1 different, 2 trouble)",
                       description=HELP)
    p.add_argument("a", metavar="A.flow")
    p.add_argument("b", metavar="B.flow", nargs="?", help="the other spec (default: A itself, with --set-a/--set-b)")
    add_set_flag(p)
    for side in ("a", "b"):
        p.add_argument(f"--set-{side}", action="append", default=[], metavar="NAME=VALUE", type=override,
                       dest=f"set_{side}",
                       help=f"override a 'let' variable on side {side.upper()} only (after --set; repeatable)")
    p.add_argument("--json", action="store_true", help="print the comparison as one JSON object")
    p.add_argument("--all", action="store_true", help="list every unit, also those that are the same")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import SafeConsole as Console
    from rich.markup import escape

    from ..tools.diff import DiffTrouble, diff_specs, print_result

    err = Console(stderr=True, highlight=False)
    try:
        result = diff_specs(args.a, args.b, args.set, args.set_a, args.set_b)
    except DiffTrouble as e:
        err.print(f"[red]{escape(str(e))}[/red]", soft_wrap=True)
        return EXIT_USAGE
    for tag, s in (("A", result.a), ("B", result.b)):
        if not s.valid:
            err.print(f"[yellow]note: {tag} ({escape(s.file)}) fails the audit ({s.errors} error(s)); "
                      f"'augflow-dsl check' lists them[/yellow]", soft_wrap=True)
    if args.json:
        print(json.dumps(result.model_dump(), separators=(",", ":")))
    else:
        out = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)
        print_result(result, out, args.all)
    return EXIT_OK if result.same else EXIT_INVALID
