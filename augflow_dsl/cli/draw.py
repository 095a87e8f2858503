"""``augflow-dsl draw SPEC --out arch.svg|png|pdf``: a call of :func:`augflow_dsl.tools.draw.draw_spec`,
the audit's errors and what was written printed. Exit 0 written; 1 the spec is invalid (drawn only if
its graph is complete); 2 usage (missing file, extension not .svg/.png/.pdf, matplotlib missing)."""
from __future__ import annotations

import argparse

from .common import EXIT_INVALID, EXIT_OK, EXIT_USAGE, add_set_flag


def register(sub) -> None:
    p = sub.add_parser("draw", help="a picture of the architecture (svg, png or pdf; matplotlib, no torch)",
                       description="Draw the architecture: stages in order, units with their shapes, augment "
                                   "points and drops with their dims, q-networks beside what they feed, totals. "
                                   "Exit status: 0 written, 1 the spec is invalid (drawn only if its graph is "
                                   "complete), 2 usage (missing file, extension not .svg/.png/.pdf).")
    p.add_argument("spec")
    p.add_argument("--out", required=True, help="the picture to write: .svg, .png or .pdf")
    add_set_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import SafeConsole as Console
    from rich.markup import escape

    from ..tools.draw import DrawTrouble, draw_spec

    err, out = Console(stderr=True, highlight=False), Console(highlight=False)
    try:
        result = draw_spec(args.spec, args.out, args.set)
    except DrawTrouble as e:
        err.print(f"[red]{escape(str(e))}[/red]", soft_wrap=True)
        return e.code
    except OSError as e:
        err.print(f"[red]error: cannot write {escape(str(args.out))}: {escape(e.strerror or str(e))}[/red]")
        return EXIT_USAGE
    r = result.report
    for e in r.errors:
        err.print(f"[red]{escape(e.get('text') or e.get('message', ''))}[/red]", soft_wrap=True)
    out.print(f"wrote {escape(str(result.path))}: {len(result.picture.boxes)} boxes, "
              f"{r.parameters.total:,} parameters" + ("" if r.valid else f"; the spec fails the audit "
                                                       f"({len(r.errors)} error(s))"), soft_wrap=True)
    return EXIT_OK if r.valid else EXIT_INVALID
