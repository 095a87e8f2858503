"""Ablation sweeps (issue 13, part 5): train and evaluate every point of a grid of ``--set`` values,
then save a table and a plot of bits/dim against the settings and the parameter count. The command
(``augflow-dsl sweep SPEC --set growth=2,6,10 --set units=2,3``) is in :mod:`augflow_dsl.cli.sweep`.

Design:

* **The grid.** Each ``--set NAME=V1,V2,...`` with a comma list is an axis; the points are the
  cartesian product of the axes in the order given (the first axis varies slowest). A single value
  is a fixed override of every point. ``train.KEY=...`` reaches the ``train:`` block as for
  ``train`` (``--set train.lr=1e-3,3e-3`` is an axis; ``train.augment=flip,translate`` is one list
  value, never an axis). A name given twice, an empty or repeated value is a usage error (exit 2).
* **Checked first.** Each point is loaded and checked analytically (``check``: its parameter
  count, no tensor) and its train settings validated before anything trains. An invalid point
  (``growth=0`` where ``cross_unit`` needs growth >= 1) is reported up front with its error and
  skipped: it stays in the table as ``invalid``; the others train. When no point is valid nothing
  trains and the exit code is 1.
* **The sweep folder** (``--out``, default ``sweeps/<spec name>/<UTC time>/``) holds ``sweep.json``
  (spec text and hash, axes, fixed overrides, the train and eval flags that define the results),
  one run folder per point named from its settings (``growth=2,units=3/``: the runtime's
  ``config.json``, ``metrics.jsonl``, ``checkpoints/``...), ``results.jsonl`` (one row per finished
  point, appended as it finishes), ``results.json`` (every point of the grid), ``table.md`` and
  ``plot.png``.
* **In-process.** Each point trains through the runtime's Python API (``runtime.train.Trainer``)
  in this process: no interpreter and torch start-up per point, and the Trainer's own SIGINT /
  SIGTERM handling writes the point's checkpoint. Each point is then evaluated exactly as
  ``augflow-dsl eval RUN --samples S`` does with its defaults (the test split, EMA weights when
  the run keeps them, batch 64, seed 0), so the table's figures are the ones ``eval`` prints.
  ``--samples`` defaults to the spec's ``train.eval_samples``.
* **Resumable.** Re-running the same command with the same ``--out`` (or ``sweep --resume DIR``)
  skips the points whose result is stored in ``results.jsonl``, and resumes a point whose training
  was interrupted: the Trainer over the same run folder with the same spec, overrides and options
  continues from its ``checkpoints/last.pt``, as ``train --resume`` does (a point whose training
  finished but whose evaluation did not is only evaluated). A folder holding another spec, grid or
  result-defining flag (``--steps/--epochs``, ``--batch``, ``--seed``, ``--precision``,
  ``--samples``) is refused with what differs (exit 1); where the data lives, the device, threads,
  logging and checkpoint intervals may change.
* **Signals.** SIGINT / SIGTERM during training: the runtime writes the point's checkpoint and
  returns; during an evaluation: the evaluation is dropped (it is redone on resume). The sweep
  then writes its results so far, says how to continue, and exits 0, as ``train`` does.
* **Scheduled jobs** (``--launcher submitit|submitit-local``, :mod:`.scheduled`): each point a job
  through submitit (one job array), its state learnt from its run folder and the scheduler on each
  rerun (resubmitted when it failed or was preempted, skipped when done); ``sweep --status``.
* **Exit codes**: 0 every valid point done (or stopped by a signal), 1 no valid point, a point
  that failed (non-finite steps), a bad spec, data set or sweep folder, 2 usage.
* ``--json`` prints one object (:class:`SweepResult`) on standard output; progress lines go to
  standard error.
"""
from __future__ import annotations

from .folder import command_line, sweep_config
from .grid import Grid, Point, check_points, parse_grid, points_of
from .records import (IDENTITY_FLAGS, OPTION_FLAGS, PointResult, SweepConfig, SweepError, SweepResult,
                      SweepUsageError)
from .plot import Series, draw_plot, plot_series
from .table import markdown_table, print_table, table_rows
from .runs import SweepOutcome, evaluate_run, run_sweep

__all__ = ["IDENTITY_FLAGS", "OPTION_FLAGS", "Grid", "Point", "PointResult", "Series", "SweepConfig", "SweepError",
           "SweepOutcome", "SweepResult", "SweepUsageError", "check_points", "command_line", "draw_plot",
           "evaluate_run", "markdown_table", "parse_grid", "plot_series", "points_of", "print_table", "run_sweep",
           "sweep_config", "table_rows"]
