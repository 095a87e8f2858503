"""``augflow-dsl``: check, graph, ops, compile, bench (and train/sample/evaluate from the runtime).

Exit codes: 0 success / valid spec, 1 invalid spec, 2 usage error (missing file, unknown
option). ``check``, ``graph`` and ``ops`` never import torch.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ..errors import SpecError
from .common import add_set_flag as _common
from .common import console as _console
from .common import positive_int  # noqa: F401




def _fmt_shape(s) -> str:
    return "x".join(str(v) for v in s)


def _num(n: int) -> str:
    if n >= 10**9:
        return f"{n / 1e9:.2f} G"
    if n >= 10**6:
        return f"{n / 1e6:.2f} M"
    return f"{n:,}"


def _print_report(report, summary: bool, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ..graph.check import units

    title = f"{report.name}  ({report.file})"
    if summary:
        table = Table(title=escape(title), header_style="bold")
        for col in ("unit", "ops", "shape in -> out", "dims", "augmented", "dropped", "params", "MACs"):
            table.add_column(col, justify="left" if col in ("unit", "shape in -> out") else "right")
        for u in units(report):
            table.add_row(escape(u.unit), str(u.ops), f"{_fmt_shape(u.shape_in)} -> {_fmt_shape(u.shape_out)}",
                          f"{math.prod(u.shape_out):,}", f"{u.augmented_so_far:,}", f"{u.dropped:,}",
                          f"{u.params:,}", _num(u.macs))
        console.print(table)
    else:
        # node by node: hundreds of rows, so aligned plain text rather than a rich Table, whose
        # per-cell measuring would double the command's run time (DenseFlow-74-10 has 412 nodes)
        headers = ("#", "node", "op", "shape in -> out", "dims", "aug. so far", "dropped", "params", "MACs")
        rows = [(str(i), r.label, r.op, f"{_fmt_shape(r.shape_in)} -> {_fmt_shape(r.shape_out)}",
                 f"{math.prod(r.shape_out):,}", f"{r.augmented_so_far:,}", f"{r.dropped:,}" if r.dropped else "",
                 f"{r.params:,}", _num(r.macs)) for i, r in enumerate(report.nodes)]
        _plain_table(console, title, headers, rows, left={1, 2, 3})
    p, d = report.parameters, report.dims
    console.print(f"parameters: [bold]{p.total:,}[/bold]  (flow {p.flow:,}, q {p.q:,}, dequantizer {p.dequantizer:,})"
                  f"   MACs per example: {_num(report.macs)}")
    if not report.complete:
        console.print(f"dims: data {d.data:,}; the graph stops at the first shape error, so the totals above "
                      f"cover only the nodes before it")
        return
    console.print(f"dims: data {d.data:,} + augmented {d.augmented:,} = {d.data + d.augmented:,}; "
                  f"scored by priors {d.prior:,}")


def _plain_table(console, title: str, headers, rows, left: set[int]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    console.print(title, style="italic", markup=False)
    console.print(line(headers), style="bold", markup=False)
    console.print("  ".join("-" * w for w in widths), markup=False)
    console.out("\n".join(line(r) for r in rows), highlight=False)


def _print_errors(report, console) -> None:
    # escape: a spec's text such as `stages: [squeeze, squee]` must not be read as rich markup
    from rich.markup import escape
    # soft_wrap: never break a message (file:line:col ...) or the source line above its caret
    for w in report.warnings:
        console.print(f"[yellow]{escape(_err_text(w))}[/yellow]", soft_wrap=True)
    for e in report.errors:
        console.print(f"[red]{escape(_err_text(e))}[/red]", soft_wrap=True)


def _err_text(e: dict) -> str:
    return e.get("text") or f"{e.get('file')}:{e.get('line')}:{e.get('column')}: {e.get('message')}"


def cmd_check(args) -> int:
    """Check each spec; ``--json`` prints one JSON array with one report object per spec."""
    from ..graph.check import check

    from rich.markup import escape

    out, err = _console(), _console(stderr=True)
    stray = [flag for flag in ("batch", "precision", "fit") if getattr(args, flag) is not None]
    if args.memory or stray:  # the static memory plan (graph/memory.py); it refuses stray flags
        from ..graph.memory import cmd_memory
        return cmd_memory(args)
    missing = [path for path in args.spec if not Path(path).is_file()]
    if missing:  # a usage error: refuse before printing any report
        for path in missing:
            err.print(f"[red]error: no such spec file: {escape(path)}[/red]")
        return 2
    worst = 0
    reports = []
    for path in args.spec:
        report = check(path, args.set)
        if args.json:
            reports.append(report.model_dump())
        else:
            if report.nodes:
                _print_report(report, args.summary, out)
            _print_errors(report, err)
            for proof in report.proved:
                out.print(f"proved  {escape(proof.line())}", soft_wrap=True)
            verdict = "[green]valid[/green]" if report.valid else f"[red]invalid ({len(report.errors)} error(s))[/red]"
            out.print(f"{escape(report.file)}: {verdict}", soft_wrap=True)
        worst = max(worst, 0 if report.valid else 1)
    if args.json:
        print(json.dumps(reports, separators=(",", ":")))
    return worst


def cmd_graph(args) -> int:
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








def _root() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The top-level parser and its (empty) subcommand set."""
    from .. import __version__
    ap = argparse.ArgumentParser(prog="augflow-dsl", description="A declarative compiler for augmented normalizing "
                                 "flows.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return ap, ap.add_subparsers(dest="command", required=True)


def build_parser() -> argparse.ArgumentParser:
    ap, sub = _root()

    p = sub.add_parser("check", help="dimension audit, invertibility, cost (no torch)")
    p.add_argument("spec", nargs="+")
    p.add_argument("--json", action="store_true",
                   help="print one JSON array holding one report object per spec (also for one spec)")
    p.add_argument("--summary", action="store_true", help="one row per unit instead of per node")
    p.add_argument("--memory", action="store_true", help="estimate peak training memory, unit by unit (no torch)")
    p.add_argument("--batch", type=positive_int, help="with --memory: the batch size (default: the spec's train.batch)")
    p.add_argument("--precision", choices=("fp32", "bf16"), help="with --memory: the nets' precision (default fp32)")
    p.add_argument("--fit", metavar="SIZE", help="with --memory: the largest batch whose peak fits SIZE (80GiB, 16GB)")
    _common(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("graph", help="export the graph (GraphML or Graphviz dot)")
    p.add_argument("spec")
    p.add_argument("--format", choices=("graphml", "dot"), default="graphml")
    p.add_argument("--out", help="write to this file instead of standard output")
    _common(p)
    p.set_defaults(func=cmd_graph)

    from ..compiler import cli as compile_cli
    compile_cli.add_commands(sub, _common)
    from ..runtime import commands as train_cli
    train_cli.add_commands(sub, _common)
    from ..runtime import eval_commands
    eval_commands.add_commands(sub, _common)
    from ..ops import cli as ops_cli
    ops_cli.add_commands(sub, _common)
    from ..interop import commands as import_cli
    import_cli.add_commands(sub, _common)
    from ..tools import cli as tools_cli
    tools_cli.add_commands(sub, _common)
    return ap


# Commands whose subparser stands alone: `augflow-dsl solve ...` builds only its own parser, so it
# imports no other command's module (its start-up time is part of its contract, issue 13).
_LEAN = {"solve": "tools.solve"}


def _lean_parser(command: str) -> argparse.ArgumentParser:
    """The parser holding only ``command``'s subparser, the one build_parser() adds for it."""
    import importlib

    ap, sub = _root()
    importlib.import_module(f"..{_LEAN[command]}", __package__).add_command(sub, _common)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = _lean_parser(argv[0]) if argv and argv[0] in _LEAN else build_parser()
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except SpecError as e:
        print(str(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
