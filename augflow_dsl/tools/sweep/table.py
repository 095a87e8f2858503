"""What a sweep shows in words: ``results.json`` and ``table.md`` (after each point) and the printed
table, one row per point, figures to 4 decimals with one standard error."""
from __future__ import annotations

import sys
from pathlib import Path

from .folder import command_line, write_atomic
from .grid import fmt
from .records import PointResult, SweepConfig, SweepResult

def save(cfg: SweepConfig, folder: Path, rows: dict[str, PointResult], stopped: str | None,
          plot: bool = True) -> SweepResult:
    """results.json and table.md (after each point), and plot.png (at the end) from the rows so far."""
    result = SweepResult(sweep=str(folder), spec=cfg.spec_name, axes=cfg.axes, fixed=cfg.fixed, stopped=stopped,
                         points=list(rows.values()))
    write_atomic(folder / "results.json", result.model_dump_json(indent=2))
    write_atomic(folder / "table.md", markdown_table(result, cfg, folder))
    if plot:
        try:
            from .plot import draw_plot
            draw_plot(result, folder / "plot.png")
        except Exception as e:  # noqa: BLE001 - a picture is never worth the sweep's results
            print(f"warning: could not draw plot.png: {e}", file=sys.stderr)
    return result


def _columns(result: SweepResult) -> list[str]:
    samples = sorted({r.samples for r in result.points if r.iw_bpd is not None})
    iw = f"IW bits/dim (S = {', '.join(str(s) for s in samples)})" if samples else None
    return [*result.axes, "parameters", "steps", "ELBO bits/dim", *([iw] if iw else []), "train s", "eval s",
            "status"]


def table_rows(result: SweepResult) -> list[list[str]]:
    """The table's cells, one row per point (figures to 4 decimals, ± one standard error)."""
    has_iw = any(r.iw_bpd is not None for r in result.points)

    def f(v, se) -> str:
        return "-" if v is None else f"{v:.4f}" + (f" ± {se:.4f}" if se is not None else "")

    out = []
    for r in result.points:
        cells = [fmt(r.settings.get(k)) for k in result.axes]
        cells += [f"{r.parameters:,}" if r.parameters is not None else "-", str(r.steps) if r.steps else "-",
                  f(r.elbo_bpd, r.elbo_se)]
        if has_iw:
            cells.append(f(r.iw_bpd, r.iw_se))
        cells += ["-" if r.train_seconds is None else f"{r.train_seconds:.1f}",
                  "-" if r.eval_seconds is None else f"{r.eval_seconds:.1f}",
                  r.status if r.error is None else f"{r.status}: {r.error}"]
        out.append(cells)
    return out


def markdown_table(result: SweepResult, cfg: SweepConfig, folder: Path) -> str:
    cols = _columns(result)
    lines = [f"# Sweep of {cfg.spec_name}", "", f"`{command_line(cfg, folder)}`", ""]
    if cfg.fixed:
        lines += ["Fixed: " + ", ".join(f"`{k}={v}`" for k, v in cfg.fixed.items()), ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for cells in table_rows(result):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "Test split, EMA weights when kept (as `augflow-dsl eval`); ± is one standard error over the "
              "examples. Parameters from `augflow-dsl check` (analytic)."]
    if result.stopped:
        lines.append(f"Stopped by {result.stopped[7:]}; pending points are not trained yet.")
    return "\n".join(lines) + "\n"


def print_table(result: SweepResult, cfg: SweepConfig, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(f"sweep of {cfg.spec_name}: test bits/dim"), header_style="bold")
    cols = _columns(result)
    for c in cols:
        t.add_column(escape(c), justify="left" if c == "status" else "right")
    for cells in table_rows(result):
        t.add_row(*(escape(c) for c in cells))
    console.print(t)
    console.print("± is one standard error over the test examples", style="dim")


