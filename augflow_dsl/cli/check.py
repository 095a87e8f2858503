"""``augflow-dsl check SPEC...``: dimension audit, invertibility, cost; ``--memory``: the static
memory plan. Never imports torch. Exit 0 every spec valid, 1 one invalid, 2 usage."""
from __future__ import annotations

import json
import math

from ..ops.shapes import fmt, fmt_count
from .common import EXIT_USAGE, add_set_flag, console, missing_spec_files, positive_int


def register(sub) -> None:
    p = sub.add_parser("check", help="dimension audit, invertibility, cost (no torch)")
    p.add_argument("spec", nargs="+")
    p.add_argument("--json", action="store_true",
                   help="print one JSON array holding one report object per spec (also for one spec)")
    p.add_argument("--summary", action="store_true", help="one row per unit instead of per node")
    p.add_argument("--memory", action="store_true", help="estimate peak training memory, unit by unit (no torch)")
    p.add_argument("--batch", type=positive_int, help="with --memory: the batch size (default: the spec's train.batch)")
    p.add_argument("--precision", choices=("fp32", "bf16"), help="with --memory: the nets' precision (default fp32)")
    p.add_argument("--fit", metavar="SIZE", help="with --memory: the largest batch whose peak fits SIZE (80GiB, 16GB)")
    add_set_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Check each spec; ``--json`` prints one JSON array with one report object per spec."""
    from rich.markup import escape

    from ..graph.pipeline import analyze

    out, err = console(), console(stderr=True)
    stray = [flag for flag in ("batch", "precision", "fit") if getattr(args, flag) is not None]
    if args.memory or stray:  # the static memory plan (cli/memory.py); it refuses stray flags
        from .memory import run as memory
        return memory(args)
    if missing_spec_files(args.spec, err):  # a usage error: refuse before printing any report
        return EXIT_USAGE
    worst = 0
    reports = []
    for path in args.spec:
        report = analyze(path, args.set).report
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
            table.add_row(escape(u.unit), str(u.ops), f"{fmt(u.shape_in)} -> {fmt(u.shape_out)}",
                          f"{math.prod(u.shape_out):,}", f"{u.augmented_so_far:,}", f"{u.dropped:,}",
                          f"{u.params:,}", fmt_count(u.macs))
        console.print(table)
    else:
        # node by node: hundreds of rows, so aligned plain text rather than a rich Table, whose
        # per-cell measuring would double the command's run time (DenseFlow-74-10 has 412 nodes)
        headers = ("#", "node", "op", "shape in -> out", "dims", "aug. so far", "dropped", "params", "MACs")
        rows = [(str(i), r.label, r.op, f"{fmt(r.shape_in)} -> {fmt(r.shape_out)}",
                 f"{math.prod(r.shape_out):,}", f"{r.augmented_so_far:,}", f"{r.dropped:,}" if r.dropped else "",
                 f"{r.params:,}", fmt_count(r.macs)) for i, r in enumerate(report.nodes)]
        _plain_table(console, title, headers, rows, left={1, 2, 3})
    p, d = report.parameters, report.dims
    cond = f", condition {p.condition:,}" if any(r.group == "condition" for r in report.nodes) else ""
    console.print(f"parameters: [bold]{p.total:,}[/bold]  (flow {p.flow:,}, q {p.q:,}, dequantizer {p.dequantizer:,}"
                  f"{cond})   MACs per example: {fmt_count(report.macs)}")
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
