"""Parameter-budget solving (issue 13, part 1): integer values of ``let`` variables that make the analytic
parameter count the largest at or under a budget (``nearest``: the closest to it, on either side). No
torch; the command (``augflow-dsl solve``) is in :mod:`augflow_dsl.cli.solve`.

Design:

* **Counting.** A point (one value per varied variable) is *counted* by evaluating the spec, parsed
  once, with the point as overrides (plus ``--set``), building its graph and summing the nodes'
  parameters: ``check``'s ``parameters.total`` without the audit. A point that does not evaluate or
  whose graph stops at a shape error (VFlow's D_H not a multiple of its 4 heads) is *invalid* and
  skipped; nothing assumes the count is monotone.
* **Model.** On its valid values the count is a polynomial in each size variable (widths enter
  squared, depths linearly, DenseFlow's units cubed), or one polynomial per parity where a channel
  count is halved (DenseFlow's cross-unit growth). The model is such a quasi-polynomial: per
  variable a degree (1-3) and a period (1 or 2), fitted exactly (rational arithmetic) through every
  count so far; the kinds are tried in order (degree 2 everywhere first, then by number of
  coefficients), the next one whenever a count contradicts the current. A kind needs counts on a
  small grid around the spec's own values (steps of the largest power of two dividing the value,
  which keeps its divisibility). When no kind fits (a count that is piecewise in another way),
  every point of the box is counted (at most ``MAX_SCAN``).
* **Search.** The model predicts every point of the box; points are taken in order of predicted
  merit (largest at or under the budget, or nearest) and counted until one is valid and counted as
  predicted: every point predicted better was counted and is invalid. Before it is taken, the model
  must hold where it was not fitted: the point's neighbours one up in each combination of variables
  (its likeliest rivals, and the other parities) are counted, and its class must hold more counts
  than coefficients, with one value more than the degree on the line through the class's centre
  along each variable. A count that disagrees moves the model and the ranking starts again; "no
  value fits" is likewise said only by a model that held on such extra counts. The point is then
  verified by ``check``'s audit (``check_graph``, what ``augflow-dsl check SPEC --set ...`` runs):
  valid, and exactly that count; a point the audit refuses is skipped and the search goes on.
  The answer is thus exact whenever the count is such a quasi-polynomial on the valid values (every
  spec and variable tried: tests/test_solve.py compares it with a scan of ``check`` over a box).
* **Range.** ``--range NAME=LO:HI`` (inclusive). Default: LO = 1 (the value itself if it is below 1);
  HI = max(2 v, 8) for the spec's value v, stretched to the largest value up to ``DEFAULT_CAP`` at
  which the model predicts at most the budget (the other variables at their values; one more with
  ``--nearest``): the box reaches past the budget however weakly the count grows, and past a dip
  of a count that rises and falls. A box of more than ``MAX_BOX`` points is refused (narrow it).
* **Ties** (equal counts): the point closest to the spec's values (sum of |v - v0|), then the
  smaller; with ``--nearest``, a count at or under the budget before one equally far above it.
* **Budgets**: a whole number (``130647294``, ``31,443,440``) or SI units: k = 10^3, M = 10^6,
  G = 10^9 (``20M``, ``19.2M``, ``1.5G``); not 2^20 (the VFlow paper's "37.8M" is in 2^20 units).
* **Exit codes**: 0 solved; 1 the spec does not load (with its own values and ``--set``), a varied
  name is not an integer variable of it, or no value fits; 2 usage (a malformed budget or range, a
  missing file, a name both varied and ``--set``, a box over ``MAX_BOX`` points).
"""
from __future__ import annotations

from .question import (DEFAULT_CAP, MAX_BOX, MAX_SCAN, Solution, SolveError, SolveUsageError, parse_budget,
                       parse_range)
from .search import solve

__all__ = ["DEFAULT_CAP", "MAX_BOX", "MAX_SCAN", "Solution", "SolveError", "SolveUsageError", "parse_budget",
           "parse_range", "solve"]

