"""``augflow-dsl ops [NAME]``: the op reference from the registry (no torch).

``ops`` lists every op grouped by role; ``ops NAME`` prints one op's reference (role, arguments,
what it computes, its shape rule, the paper equation, its torch layer); ``--json`` prints the
same as JSON and ``--markdown`` the whole reference as docs/ops.md holds it.
"""
from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("ops", help="the op reference: every op, or one op's arguments, rule and equation")
    p.add_argument("name", nargs="?", help="an op name (e.g. affine_coupling); without it, list every op")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the reference as JSON")
    fmt.add_argument("--markdown", action="store_true", help="print the whole reference as Markdown (docs/ops.md)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import closest
    from ..ops import REGISTRY
    from ..ops.net_list import NET_LAYERS
    from ..ops.reference import all_ops, describe, markdown, net_layers

    if args.markdown:
        if args.name:
            print("error: --markdown prints the whole reference; leave out the op name", file=sys.stderr)
            return 2
        sys.stdout.write(markdown())
        return 0
    if args.name is not None and args.name not in REGISTRY and args.name in NET_LAYERS and not args.json:
        _print_net_layers([d for d in net_layers() if d.name == args.name])
        return 0
    if args.name is not None and args.name not in REGISTRY:
        close = closest(args.name, REGISTRY, n=3)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        print(f"error: unknown op '{args.name}'{hint} (`augflow-dsl ops` lists every op)", file=sys.stderr)
        return 1
    if args.json:
        data = describe(args.name).to_dict() if args.name else [d.to_dict() for d in all_ops()]
        print(json.dumps(data, indent=2))
        return 0
    if args.name:
        _print_op(describe(args.name))
    else:
        _print_list(all_ops())
        _print_net_layers(net_layers())
    return 0


def _console():
    from ..errors import SafeConsole as Console
    return Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def _print_list(docs) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="augflow-dsl ops (augflow-dsl ops NAME for one op's reference)", header_style="bold")
    for col in ("op", "role", "summary"):
        table.add_column(col)
    for i, d in enumerate(docs):
        last = i + 1 == len(docs) or docs[i + 1].role != d.role
        table.add_row(escape(d.name), d.role, escape(d.summary), end_section=last)
    _console().print(table)


def _print_net_layers(docs) -> None:
    """The net layers a net written as a list is made of (ops/net_list.py)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape("net layers (inside a net written as a list: net NAME: [conv(3, 64), relu, "
                               "zero_conv(3)])"),
                  header_style="bold")
    for col in ("net layer", "data", "arguments", "summary"):
        table.add_column(col, overflow="fold")
    for d in docs:
        args = "; ".join(f"{a.name} ({a.type}, {a.default})" for a in d.arguments) or "none"
        table.add_row(escape(d.name), d.data, escape(args), escape(d.summary))
    _console().print(table)


def _print_op(d) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ..ops.reference import ROLES

    console = _console()
    console.print(f"[bold]{escape(d.name)}[/bold] ({d.role}): {escape(d.summary)}")
    console.print(f"[dim]role: {escape(ROLES.get(d.role, d.role))}[/dim]")
    if d.arguments:
        table = Table(header_style="bold")
        for col in ("argument", "type", "default", "description"):
            table.add_column(col, overflow="fold")
        for a in d.arguments:
            table.add_row(escape(a.name), escape(a.type), escape(a.default), escape(a.description))
        console.print(table)
    else:
        console.print("arguments: none")
    for title, text in (("computes", d.computes), ("shape rule", d.shape_rule), ("implements", d.equation),
                        ("torch layer", d.layer)):
        console.print(f"\n[bold]{title}[/bold]")
        console.print(escape(text))
