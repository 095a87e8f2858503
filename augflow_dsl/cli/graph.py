"""``augflow-dsl graph SPEC``: export the graph as GraphML or Graphviz dot (no torch). Exit 0
written, 1 a spec that does not load or stops at a shape error, 2 a missing spec file."""
from __future__ import annotations

import sys
from pathlib import Path

from .common import EXIT_INVALID, EXIT_OK, EXIT_USAGE, add_set_flag, missing_spec_files


def register(sub) -> None:
    p = sub.add_parser("graph", help="export the graph (GraphML or Graphviz dot)")
    p.add_argument("spec")
    p.add_argument("--format", choices=("graphml", "dot"), default="graphml")
    p.add_argument("--out", help="write to this file instead of standard output")
    add_set_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import Source
    from ..graph.pipeline import analyze
    from ..graph.serialize import export

    if missing_spec_files([args.spec]):
        return EXIT_USAGE
    a = analyze(args.spec, args.set)
    if a.load_error is not None:
        print(str(a.load_error), file=sys.stderr)
        return EXIT_INVALID
    if a.diagnostics.errors:  # a shape error: the graph stops there, so there is no graph to export
        for e in a.diagnostics.errors:
            print(str(e.with_source(Source(a.spec.text, a.spec.file))), file=sys.stderr)
        return EXIT_INVALID
    text = export(a.graph, args.format)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK
