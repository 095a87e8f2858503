"""``augflow-dsl check SPEC --memory [--batch N] [--precision fp32|bf16] [--fit 80GiB]``: the
static estimate of peak training memory (:mod:`augflow_dsl.graph.memory`), one table per spec.
Never imports torch. Exit 0, 1 for a spec that does not load or check, 2 for a usage error."""
from __future__ import annotations

import json

from ..errors import SpecError
from ..graph.memory import MemoryEstimate, estimate, parse_size
from .common import EXIT_INVALID, EXIT_OK, EXIT_USAGE, console, missing_spec_files


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def size(n: int) -> str:
    """Bytes in the largest binary unit that keeps the number at least 1."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} B"


def print_estimate(est: MemoryEstimate, out) -> None:
    """The estimate as a table (one row per unit) and its totals, on the rich console ``out``."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"{est.name}  ({est.file}): training memory at batch {est.batch}, {est.precision}"),
                  header_style="bold")
    for col in ("unit", "kept per example", "activations", "cumulative", "transient"):
        table.add_column(col, justify="left" if col == "unit" else "right")
    for u in est.units:
        mark = "  <- peak" if u.unit == est.peak_unit and est.peak_at != "optimizer step" else ""
        table.add_row(escape(u.unit) + mark, size(u.per_example), mib(u.activations), mib(u.cumulative),
                      mib(u.transient))
    out.print(table)
    ema = f"EMA copy {mib(est.ema_copy)}" if est.ema else "no EMA"
    out.print(f"parameters {est.parameters:,}: weights {mib(est.params)}, gradients {mib(est.grads)}, "
              f"{est.optimizer} state {mib(est.optimizer_state)}, {ema}, batch {mib(est.data)}  = static "
              f"{mib(est.static)}", soft_wrap=True)
    transient = f"; transient at the peak: {mib(est.transient)}" if est.transient else ""
    out.print(f"activations kept for the backward: {mib(est.activations)}{transient}", soft_wrap=True)
    where = est.peak_at if est.peak_at == "optimizer step" else f"{est.peak_at}, {est.peak_unit}"
    out.print(f"estimated peak: [bold]{size(est.peak)}[/bold] ({est.peak:,} bytes), at {escape(where)}",
              soft_wrap=True)
    if est.fit is not None:
        f = est.fit
        if f.batch:
            out.print(f"fits {size(f.memory)}: batch up to [bold]{f.batch:,}[/bold] (estimated peak "
                      f"{size(f.peak)})", soft_wrap=True)
        else:
            out.print(f"fits {size(f.memory)}: not even batch 1 (its estimated peak is {size(f.peak)})",
                      soft_wrap=True)


def run(args) -> int:
    """``check --memory``: one estimate per spec (``--json``: one JSON array of estimates). Exit 0,
    1 for a spec that does not load or check, 2 for a usage error."""
    out, err = console(), console(stderr=True)
    if not args.memory:
        flags = ", ".join(f"--{f}" for f in ("batch", "precision", "fit") if getattr(args, f) is not None)
        err.print(f"error: {flags} belongs to the memory estimate: add --memory "
                  f"(augflow-dsl check SPEC --memory --batch N [--precision fp32|bf16] [--fit 80GiB])", markup=False)
        return EXIT_USAGE
    if args.summary:
        err.print("error: --summary and --memory are two different reports; give one", markup=False)
        return EXIT_USAGE
    try:
        budget = parse_size(args.fit) if args.fit is not None else None
    except ValueError as e:
        err.print(f"[red]error: --fit: {e}[/red]", markup=True)
        return EXIT_USAGE
    if missing_spec_files(args.spec, None):
        return EXIT_USAGE
    estimates, worst = [], EXIT_OK
    for path in args.spec:
        try:
            est = estimate(path, args.batch, args.precision or "fp32", args.set, budget)
        except SpecError as e:
            err.print(str(e), markup=False, soft_wrap=True)
            worst = EXIT_INVALID
            continue
        estimates.append(est)
        if not args.json:
            print_estimate(est, out)
    if args.json:
        print(json.dumps([est.model_dump() for est in estimates], separators=(",", ":")))
    return worst


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - a convenience
    import sys

    from . import main as cli_main
    return cli_main(["check", "--memory", *(argv if argv is not None else sys.argv[1:])])
