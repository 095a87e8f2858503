"""``augflow-dsl compile SPEC [--out FILE] [--train ...]``: build the PyTorch module and report
it (``--train`` is ``augflow-dsl train SPEC ...``). torch is imported only when it runs."""
from __future__ import annotations

import sys

from .common import EXIT_INVALID, EXIT_OK, add_set_flag, missing_spec_files
from .train import add_train_flags


def register(sub) -> None:
    p = sub.add_parser("compile", help="build the PyTorch module and report it")
    p.add_argument("spec")
    p.add_argument("--out", help="save the module (state and spec text) to this file")
    p.add_argument("--train", action="store_true", help="... and train it (the flags of 'augflow-dsl train')")
    add_train_flags(p)
    add_set_flag(p)
    p.set_defaults(func=run)


def checked(spec_path: str, overrides) -> tuple | int:
    """(spec, graph, report) of a valid spec, or the exit code after printing why not: 2 for a
    missing file, 1 for a spec that does not load or check (file:line:col messages). Shared with
    ``bench``."""
    from .common import EXIT_USAGE
    if missing_spec_files([spec_path]):
        return EXIT_USAGE
    from ..graph.pipeline import analyze
    a = analyze(spec_path, overrides)
    if not a.valid:
        for e in a.report.errors:
            print(e["text"], file=sys.stderr)
        return EXIT_INVALID
    return a.spec, a.graph, a.report


def run(args) -> int:
    if args.train:
        from . import train
        args.resume = None  # ``compile --train SPEC ...`` is ``train SPEC ...``
        return train.run(args)
    from ..errors import SafeConsole as Console
    from rich.markup import escape
    from rich.table import Table

    from ..compiler.report import compile_report

    ok = checked(args.spec, args.set)
    if isinstance(ok, int):
        return ok
    spec, g, report = ok
    console = Console(highlight=False)
    res = compile_report(spec, g, report)
    table = Table(title=f"{spec.name}: compiled in {res.seconds:.2f} s", header_style="bold")
    for col in ("stage", "layers", "shape out", "params", "MACs"):
        table.add_column(col, justify="left" if col in ("stage", "shape out") else "right")
    for unit, ops, shape_out, params, macs in res.rows:
        table.add_row(escape(unit), str(ops), "x".join(map(str, shape_out)), f"{params:,}", f"{macs:,}")
    console.print(table)
    d = report.dims
    console.print(f"parameters: {res.parameters:,} (analytic {report.parameters.total:,}); plan: "
                  f"{len(res.model.plan)} steps; dims: data {d.data:,} + augmented {d.augmented:,} = priors "
                  f"{d.prior:,}")
    if args.out:
        from ..compiler.model_file import save_compiled
        from ..language.evaluate import parse_override
        try:
            save_compiled(args.out, res.model, dict(parse_override(i) for i in args.set))
        except OSError as e:
            print(f"error: cannot save to {args.out}: {e.strerror or e}", file=sys.stderr)
            return EXIT_INVALID
        console.print(f"saved to {args.out}")
    return EXIT_OK if res.parameters == report.parameters.total else EXIT_INVALID
