"""metrics.jsonl (one JSON object per logged step or evaluation) and curves.png; each row is also
mirrored to the run's TensorBoard events (runtime.tensorboard) when the run writes them.

Training rows: ``step`` (updates done), ``epoch``, ``loss`` (nats per example), ``bpd``, ``lr``,
``grad_norm``, ``images_per_s``, ``time`` (seconds since the run started, summed over resumes).
Evaluation rows: ``step``, ``split``, ``bpd``, ``samples`` (1 = the one-sample ELBO, S > 1 = importance
weighting), ``images``, ``weights`` ("ema" when the run keeps an EMA, else "raw"; curves.png says which).

Each row is one JSON object on one line, appended in one write and ended by a newline, so a write
cut by a crash or a full disk leaves at most the last line torn: it does not parse as a JSON object
(or lacks its newline). Resuming drops such a line with a warning (:meth:`MetricsLog.truncate_after`);
a damaged line anywhere else is refused by line number. A write that fails (full disk, quota)
stops the run cleanly (runtime.run_folder.WriteFailed), never with a raw OSError.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from .run_folder import TrainError, write_failed


def _parse(line: str) -> dict | None:
    """The row on ``line``, or None when it is not a JSON object (a torn or damaged line)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


class MetricsLog:
    """Appends rows to ``metrics.jsonl``; on resume, rows past the checkpoint's step are dropped so
    that a resumed run's log reads as if it had never stopped."""

    def __init__(self, path: str | Path, enabled: bool = True, tensorboard=None):
        """``tensorboard``: a :class:`~augflow_dsl.runtime.tensorboard.TensorBoardLog` that mirrors
        every row (and takes the sample grids), or None."""
        self.path = Path(path)
        self.enabled = enabled
        self.tensorboard = tensorboard if enabled else None

    def truncate_after(self, step: int, say=_warn) -> None:
        """Keep the rows up to ``step`` (rewritten atomically); a torn last line (a write cut by a
        crash or a full disk) is dropped, and ``say`` warns of it; a damaged line before the last
        is refused (TrainError naming the line)."""
        if not self.enabled or not self.path.exists():
            return
        lines = [(i, line) for i, line in enumerate(self.path.read_text(errors="replace").splitlines(), 1)
                 if line.strip()]
        keep = []
        for n, (i, line) in enumerate(lines):
            row = _parse(line)
            if row is None and n == len(lines) - 1:
                say(f"{self.path}: line {i} is torn (a write cut short, e.g. by a full disk); dropped it")
            elif row is None:
                raise TrainError(f"{self.path}: line {i} is not a JSON object (damaged): {line[:80]!r}; "
                                 f"remove or repair it, then resume")
            elif not isinstance(row.get("step", 0), (int, float)) or row.get("step", 0) <= step:
                keep.append(line)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text("".join(line + "\n" for line in keep))
            tmp.replace(self.path)
        except OSError as e:
            raise write_failed(self.path, e, self.path.parent) from None

    def write(self, row: dict) -> None:
        """Append ``row`` as one line; an OSError (a full disk) becomes WriteFailed."""
        if not self.enabled:
            return
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(row, allow_nan=True) + "\n")
                f.flush()
        except OSError as e:
            raise write_failed(self.path, e, self.path.parent) from None
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
    """The rows of a metrics.jsonl; lines that are not JSON objects (a torn last line) are left out."""
    p = Path(path)
    if not p.exists():
        return []
    rows = (_parse(line) for line in p.read_text(errors="replace").splitlines() if line.strip())
    return [r for r in rows if r is not None]


def plot_curves(rows: list[dict], out: str | Path, title: str = "") -> None:
    """Train and test bits/dim against step (matplotlib, no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["bpd"]) for r in rows if "split" not in r and math.isfinite(r.get("bpd", math.nan))]
    tests = [r for r in rows if r.get("split") == "test" and r.get("samples", 1) == 1]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if train:  # the training loss is always the live (raw) weights'
        ax.plot(*zip(*train), label="train (one-sample ELBO, raw weights)", lw=1)
    # one test curve per weights: the EMA's (or the raw ones' when no EMA is kept) and, with --eval-raw,
    # the raw weights' beside the EMA's; "weights" is absent in logs from before issue 24
    curves: dict[str, list] = {}
    for r in tests:
        curves.setdefault(r.get("weights") or "", []).append((r["step"], r["bpd"]))
    for weights, points in sorted(curves.items(), key=lambda kv: kv[0] != "ema"):
        which = {"ema": ", EMA weights", "raw": ", raw weights"}.get(weights, "")
        ax.plot(*zip(*points), "o-" if weights != "raw" or len(curves) == 1 else "s--",
                label=f"test (one-sample ELBO{which})", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("bits/dim")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if train or tests:
        ax.legend()
    fig.tight_layout()
    tmp = Path(out).with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)


__all__ = ["MetricsLog", "plot_curves", "read_rows"]
