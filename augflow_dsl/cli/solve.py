"""``augflow-dsl solve SPEC --params 20M --vary filters [--vary blocks] [--nearest] [--range NAME=LO:HI]``:
the flags, a call of :func:`augflow_dsl.tools.solve.solve`, the answer printed. Exit 0 solved; 1 no
answer or a bad spec; 2 usage. Its start-up time is part of its contract: this module imports nothing
heavy (the solver's own modules are pure Python; the graph is imported when a point is counted)."""
from __future__ import annotations

import argparse
import sys

from .common import EXIT_INVALID, EXIT_OK, EXIT_USAGE, add_set_flag


def _budget_arg(text: str) -> int:
    from ..tools.solve import SolveUsageError, parse_budget
    try:
        return parse_budget(text)
    except SolveUsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _range_arg(text: str) -> tuple[str, tuple[int, int]]:
    from ..tools.solve import SolveUsageError, parse_range
    try:
        return parse_range(text)
    except SolveUsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(sub) -> None:
    from ..tools.solve import DEFAULT_CAP

    p = sub.add_parser(
        "solve", help="integer values of let variables that fit a parameter budget (no torch)",
        description="Find integer values of the --vary variables whose analytic parameter count is the largest "
                    "at or under the budget (--nearest: the closest to it), verified by check. Values that make "
                    "the spec invalid are skipped. Exit 0 solved, 1 no answer or a bad spec, 2 usage.")
    p.add_argument("spec")
    p.add_argument("--params", required=True, type=_budget_arg, metavar="BUDGET",
                   help="the budget: a number of parameters (130647294, 31,443,440) or SI units, k = 10^3, "
                        "M = 10^6, G = 10^9 (500k, 4M, 19.2M, 1.5G)")
    p.add_argument("--vary", action="append", required=True, metavar="NAME",
                   help="an integer 'let' variable to choose (repeatable: the values are chosen jointly)")
    p.add_argument("--nearest", action="store_true",
                   help="the count closest to the budget, above or below (default: the largest at or under it)")
    p.add_argument("--range", action="append", default=[], type=_range_arg, metavar="NAME=LO:HI",
                   help="search NAME in LO..HI inclusive (default: 1 .. max(2 v, 8) for the spec's value v, "
                        f"stretched to the largest value up to {DEFAULT_CAP} predicted within the budget)")
    p.add_argument("--json", action="store_true", help='print {"values": {...}, "parameters": N, "set": [...]}')
    add_set_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from ..errors import SpecError
    from ..tools.solve import SolveError, SolveUsageError, solve

    ranges: dict[str, tuple[int, int]] = {}
    try:
        for name, r in args.range:
            if name in ranges:
                raise SolveUsageError(f"--range {name} is given twice")
            ranges[name] = r
        sol = solve(args.spec, args.params, args.vary, nearest=args.nearest, overrides=args.set, ranges=ranges)
    except SolveUsageError as e:
        _error(f"error: {e}")
        return EXIT_USAGE
    except SolveError as e:
        _error(f"error: {e}")
        return EXIT_INVALID
    except SpecError as e:
        print(str(e), file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        print(json.dumps(sol.to_json()))
        return EXIT_OK
    diff = sol.parameters - sol.budget
    sets = " ".join(f"--set {s}" for s in sol.set)
    print("  ".join(f"{n} = {v}" for n, v in sol.values.items()))
    print(f"parameters: {sol.parameters:,}  (budget {sol.budget:,}: {diff:+,}, {100 * diff / sol.budget:+.2f}%)")
    print(sets)
    print(f"searched {' x '.join(f'{n} {lo}..{hi}' for n, (lo, hi) in sol.ranges.items())} for the count "
          f"{'nearest to' if sol.nearest else 'largest at or under'} the budget: {sol.counted} counted, "
          f"{sol.checked} fully checked (model: {sol.method})")
    return EXIT_OK


def _error(message: str) -> None:
    from rich.markup import escape

    from .common import console
    console(stderr=True).print(f"[red]{escape(message)}[/red]", soft_wrap=True)
