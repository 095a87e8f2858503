"""metrics.jsonl (one JSON object per logged step or evaluation) and curves.png; each row is also
mirrored to the run's TensorBoard events (runtime.tensorboard) when the run writes them.

Training rows: ``step`` (updates done), ``epoch``, ``loss`` (nats per example), ``bpd``, ``lr``,
``grad_norm``, ``images_per_s``, ``time`` (seconds since the run started, summed over resumes).
Evaluation rows: ``step``, ``split``, ``bpd``, ``samples`` (1 = the one-sample ELBO, S > 1 = importance
weighting), ``images``, ``weights`` ("ema" when the run keeps an EMA, else "raw"; curves.png says which).
"""
from __future__ import annotations

import json
import math
from pathlib import Path


class MetricsLog:
    """Appends rows to ``metrics.jsonl``; on resume, rows past the checkpoint's step are dropped so
    that a resumed run's log reads as if it had never stopped."""

    def __init__(self, path: str | Path, enabled: bool = True, tensorboard=None):
        """``tensorboard``: a :class:`~augflow_dsl.runtime.tensorboard.TensorBoardLog` that mirrors
        every row (and takes the sample grids), or None."""
        self.path = Path(path)
        self.enabled = enabled
        self.tensorboard = tensorboard if enabled else None

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
        if self.tensorboard is not None:
            self.tensorboard.row(row)

    def image(self, step: int, path: str | Path) -> None:
        """A sample grid written at ``step`` (to TensorBoard; metrics.jsonl keeps no pictures)."""
        if self.tensorboard is not None and Path(path).is_file():
            self.tensorboard.image(step, path)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None

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
    tests = [r for r in rows if r.get("split") == "test" and r.get("samples", 1) == 1]
    test = [(r["step"], r["bpd"]) for r in tests]
    weights = {r.get("weights") for r in tests}  # "ema" or "raw"; absent in logs from before issue 24
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if train:  # the training loss is always the live (raw) weights'
        ax.plot(*zip(*train), label="train (one-sample ELBO, raw weights)", lw=1)
    if test:
        which = {"ema": ", EMA weights", "raw": ", raw weights"}.get(weights.pop(), "") if len(weights) == 1 else ""
        ax.plot(*zip(*test), "o-", label=f"test (one-sample ELBO{which})", ms=3)
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
