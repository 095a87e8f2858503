"""``plot.png``: bits/dim against each axis of the grid and against the parameter count (matplotlib,
no display)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .grid import fmt
from .records import PointResult, SweepResult

@dataclass
class Series:
    """One line of the plot: its panel (an axis name, or "parameters"), label, metric and points."""

    panel: str
    label: str
    metric: str                      # "iw" or "elbo"
    x: list[Any]
    y: list[float]
    err: list[float]


def plot_series(result: SweepResult) -> list[Series]:
    """What plot.png draws: for each axis, bits/dim against its values, one line per combination of
    the other axes' values; then bits/dim against the parameter count, one line along the first axis
    per combination of the others. Done points only; IW and ELBO."""
    done = [r for r in result.points if r.status == "done"]
    axes = list(result.axes)
    metrics = [m for m in ("iw", "elbo") if any(getattr(r, f"{m}_bpd") is not None for r in done)]
    out: list[Series] = []
    panels = [(a, a) for a in axes] + [("parameters", axes[0] if axes else None)]
    for panel, along in panels:
        others = [b for b in axes if b != along]
        groups: dict[tuple, list[PointResult]] = {}
        for r in done:
            groups.setdefault(tuple(json.dumps(r.settings.get(b)) for b in others), []).append(r)
        for key, members in groups.items():
            label = ", ".join(f"{b}={fmt(json.loads(v))}" for b, v in zip(others, key)) or result.spec
            for m in metrics:
                pts = [(r.parameters if panel == "parameters" else r.settings[panel], getattr(r, f"{m}_bpd"),
                        getattr(r, f"{m}_se")) for r in members if getattr(r, f"{m}_bpd") is not None]
                if pts:
                    out.append(Series(panel, label, m, [p[0] for p in pts], [p[1] for p in pts],
                                      [p[2] if p[2] is not None and math.isfinite(p[2]) else 0.0 for p in pts]))
    return out


def draw_plot(result: SweepResult, out: Path) -> list[Series]:
    """plot.png (matplotlib, no display): the :func:`plot_series` lines, IW solid, ELBO dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = plot_series(result)
    panels = list(result.axes) + ["parameters"]
    fig, axs = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), dpi=100, squeeze=False)
    names = {"iw": "IW", "elbo": "ELBO"}
    for ax, panel in zip(axs[0], panels):
        values = result.axes.get(panel, [])
        numeric = panel == "parameters" or all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in values)
        colours: dict[str, Any] = {}
        for s in (s for s in series if s.panel == panel):
            xs = s.x if numeric else [values.index(v) for v in s.x]
            colour = colours.get(s.label)
            line = ax.errorbar(xs, s.y, yerr=s.err, marker="o", ms=4, capsize=2, color=colour,
                               ls="-" if s.metric == "iw" or len(set(x.metric for x in series)) == 1 else "--",
                               alpha=1.0 if s.metric == "iw" else 0.6, label=f"{s.label} ({names[s.metric]})")
            colours.setdefault(s.label, line.lines[0].get_color())
        if not numeric:
            ax.set_xticks(range(len(values)), [fmt(v) for v in values])
        elif panel != "parameters":
            shown = sorted({x for s in series if s.panel == panel for x in s.x})
            if 0 < len(shown) <= 12:
                ax.set_xticks(shown, [fmt(v) for v in shown])
        ax.set_xlabel("parameters" if panel == "parameters" else panel)
        ax.set_ylabel("test bits/dim")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    fig.suptitle(f"sweep of {result.spec}")
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)
    return series
