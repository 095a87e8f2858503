"""metrics.jsonl (one JSON object per logged step or evaluation) and curves.png.

Training rows: ``step`` (updates done), ``epoch``, ``loss`` (nats per example), ``bpd``, ``lr``,
``grad_norm``, ``images_per_s``, ``time`` (seconds since the run started, summed over resumes).
Evaluation rows: ``step``, ``split``, ``bpd``, ``samples`` (1 = the one-sample ELBO, S > 1 = importance
weighting), ``images``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path


class MetricsLog:
    """Appends rows to ``metrics.jsonl``; on resume, rows past the checkpoint's step are dropped so
    that a resumed run's log reads as if it had never stopped."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        if not self.enabled or not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(row, allow_nan=True) + "\n")
            f.flush()

    def rows(self) -> list[dict]:
        return read_rows(self.path)


def read_rows(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def plot_curves(rows: list[dict], out: str | Path, title: str = "") -> None:
    """Train and test bits/dim against step (matplotlib, no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["bpd"]) for r in rows if "split" not in r and math.isfinite(r.get("bpd", math.nan))]
    test = [(r["step"], r["bpd"]) for r in rows if r.get("split") == "test" and r.get("samples", 1) == 1]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train (one-sample ELBO)", lw=1)
    if test:
        ax.plot(*zip(*test), "o-", label="test (one-sample ELBO)", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("bits/dim")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if train or test:
        ax.legend()
    fig.tight_layout()
    tmp = Path(out).with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)


__all__ = ["MetricsLog", "plot_curves", "read_rows"]
