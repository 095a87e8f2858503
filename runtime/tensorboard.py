"""TensorBoard event files of a run (``RUN/tb/``), written through ``torch.utils.tensorboard``'s
``SummaryWriter`` next to ``metrics.jsonl``: every metrics row becomes scalars at its step, each sample
grid an image, and, once when a run starts, the spec text and the parameter count split as text.

Scalar tags (one per ``metrics.jsonl`` field, :mod:`augflow_dsl.runtime.metrics`):

* training rows: ``train/loss``, ``train/bpd``, ``train/lr``, ``train/grad_norm``, ``train/images_per_s``;
* evaluation rows: ``eval/<split>_bpd`` (the one-sample ELBO) and ``eval/<split>_iw_bpd`` (importance
  weighted, ``samples`` > 1), of the EMA weights when the run keeps them; with ``--eval-raw``, the raw
  weights' figures beside them as ``eval/<split>_bpd_raw`` and ``eval/<split>_iw_bpd_raw``.

A resumed run opens the writer with ``purge_step`` = the checkpoint's step + 1: TensorBoard then drops
the events an interrupted attempt wrote past the checkpoint, as ``MetricsLog.truncate_after`` drops
its rows, so no step is shown twice. TensorBoard reads a folder's event files in name order and takes
the later file's events past the purge step; the names start with the writer's opening second, then the
host, the pid and a process-wide counter, compared as text. A writer opened in the same second as an
existing file (a resume right after a crash, in the same process or another) could therefore sort first
(pid 987 after 1234, counter 10 before 9) and its events be read as the older ones: the resumed writer
waits for the next second first (:func:`_after_existing_files`).
"""
from __future__ import annotations

import math
import re
import sys
import time
from pathlib import Path
from typing import Any

TRAIN_FIELDS = ("loss", "bpd", "lr", "grad_norm", "images_per_s")


def scalars_of(row: dict) -> dict[str, float]:
    """The scalars (tag -> value) of one ``metrics.jsonl`` row."""
    if "split" in row:
        kind = "bpd" if int(row.get("samples", 1)) == 1 else "iw_bpd"
        raw = "_raw" if "alongside" in row else ""  # --eval-raw's row of the live weights beside the EMA's
        return {f"eval/{row['split']}_{kind}{raw}": float(row["bpd"])}
    return {f"train/{k}": float(row[k]) for k in TRAIN_FIELDS if row.get(k) is not None}


_EVENT_SECOND = re.compile(r"events\.out\.tfevents\.(\d+)\.")


def _after_existing_files(folder: Path) -> None:
    """Wait until the clock's second is past every existing event file's opening second, so that a new
    writer's file sorts after them by name (TensorBoard's reading order)."""
    seconds = [int(m.group(1)) for f in folder.glob("events.out.tfevents.*")
               if (m := _EVENT_SECOND.match(f.name))]
    if not seconds:
        return
    latest = max(seconds)
    if latest + 1 - time.time() > 2:  # a file from a clock far ahead (another host): waiting cannot help
        return
    while (now := time.time()) < latest + 1:
        time.sleep(latest + 1 - now + 1e-3)


class TensorBoardLog:
    """The run's event writer (``folder`` is ``RUN/tb``); ``resume_step`` > 0 purges later events."""

    def __init__(self, folder: str | Path, resume_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(folder)
        if resume_step and self.folder.is_dir():
            _after_existing_files(self.folder)
        self.writer = SummaryWriter(str(self.folder), purge_step=resume_step + 1 if resume_step else None,
                                    flush_secs=30)

    def row(self, row: dict) -> None:
        step = int(row["step"])
        for tag, value in scalars_of(row).items():
            if math.isfinite(value):
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def image(self, step: int, path: str | Path, tag: str = "samples") -> None:
        """A sample grid (the PNG ``sampling.save_samples`` wrote) as an image at ``step``."""
        import numpy as np
        from PIL import Image

        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB"))
        self.writer.add_image(tag, pixels, step, dataformats="HWC")
        self.writer.flush()

    def start(self, spec, parameters: dict[str, int]) -> None:
        """Once, at step 0: the spec text (as a code block) and the parameter count split (a table)."""
        self.writer.add_text("spec", f"```\n{spec.text}\n```", 0)
        table = ["| part | parameters |", "|---|---:|", *(f"| {k} | {v:,} |" for k, v in parameters.items())]
        self.writer.add_text("parameters", "\n".join(table), 0)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def parameter_split(spec, model, analysis=None) -> dict[str, Any]:
    """The parameter count split as ``augflow-dsl check`` reports it (flow, q, dequantizer, total),
    and the model's trainable tensor count."""
    if analysis is None or analysis.report is None:
        from ..graph.pipeline import analyze
        analysis = analyze(spec)
    p = analysis.report.parameters
    split = {"flow": p.flow, "q (augmentation)": p.q, "dequantizer": p.dequantizer, "total": p.total}
    split["trainable (torch)"] = sum(t.numel() for t in model.parameters() if t.requires_grad)
    return split


def open_tensorboard(run: str | Path, enabled: bool, step: int, spec=None, model=None,
                     analysis=None) -> TensorBoardLog | None:
    """The writer of run folder ``run`` (None when ``enabled`` is false, e.g. ``--no-tensorboard`` or a
    rank other than 0); a fresh run (``step`` 0) starts with the spec text and the parameter split."""
    if not enabled:
        return None
    try:
        log = TensorBoardLog(Path(run) / "tb", resume_step=step)
    except ImportError:  # torch.utils.tensorboard needs the tensorboard package
        print("warning: tensorboard is not installed; no event files are written (pip install tensorboard, "
              "or --no-tensorboard)", file=sys.stderr)
        return None
    if step == 0 and spec is not None and model is not None:
        log.start(spec, parameter_split(spec, model, analysis))
    return log


__all__ = ["TRAIN_FIELDS", "TensorBoardLog", "open_tensorboard", "parameter_split", "scalars_of"]
