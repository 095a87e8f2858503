"""``augflow-dsl graph SPEC``: export the graph as GraphML or Graphviz dot (no torch). Exit 0
written, 1 a spec that does not load or stops at a shape error, 2 a missing spec file."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import SpecError
from .common import add_set_flag


def register(sub) -> None:
    p = sub.add_parser("graph", help="export the graph (GraphML or Graphviz dot)")
    p.add_argument("spec")
    p.add_argument("--format", choices=("graphml", "dot"), default="graphml")
    p.add_argument("--out", help="write to this file instead of standard output")
    add_set_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import Source
    from ..graph.builder import build
    from ..graph.serialize import export
    from ..language.load import load

    if not Path(args.spec).is_file():
        print(f"error: no such spec file: {args.spec}", file=sys.stderr)
        return 2
    try:
        spec = load(args.spec, args.set)
    except SpecError as e:
        print(str(e), file=sys.stderr)
        return 1
    g, diag = build(spec)
    if diag.errors:  # a shape error: the graph stops there, so there is no graph to export
        for e in diag.errors:
            print(str(e.with_source(Source(spec.text, spec.file))), file=sys.stderr)
        return 1
    text = export(g, args.format)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0
