"""The one load -> build -> check pipeline: every caller that needs a spec's graph or its
report (check, compile, train, the memory estimate, diff, draw, solve, graph export) runs it
through :func:`analyze`. Pure Python, no torch."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from ..errors import Diagnostics, SpecError, all_errors
from ..language.load import load
from ..language.models import Spec
from .builder import build
from .check import CheckReport, check_graph
from .data_audit import audit_data


@dataclass(frozen=True)
class Analysis:
    """A spec, its graph and its report. ``spec`` and ``graph`` are None when the spec did not
    load; ``load_error`` then holds the loader's error and the report its messages."""

    spec: Spec | None
    graph: nx.DiGraph | None
    diagnostics: Diagnostics | None
    report: CheckReport
    load_error: SpecError | None = None

    @property
    def valid(self) -> bool:
        return self.report.valid

    def raise_if_invalid(self, refusal: str = "the spec is not valid") -> Analysis:
        """Returns self for a valid spec. Otherwise raises: the loader's own SpecError for a spec
        that did not load, else a SpecError ``"<refusal>: <the first error, file:line:col>"``."""
        if self.load_error is not None:
            raise self.load_error
        if not self.valid:
            raise SpecError(f"{refusal}: {self.report.errors[0]['text']}")
        return self


def analyze(spec: Spec | str | Path, overrides=None) -> Analysis:
    """Load ``spec`` (a Spec, or a path with ``overrides``), build its graph and check it.
    Never raises for a bad spec: a spec that does not load gives a report with its errors."""
    if not isinstance(spec, Spec):
        try:
            spec = load(spec, overrides)
        except SpecError as e:  # the spec did not load: no graph, so the report is not complete
            report = CheckReport(name=str(spec), file=str(spec), valid=False, complete=False,
                                 errors=[x.to_dict() | {"text": str(x)} for x in all_errors(e)])
            return Analysis(None, None, None, report, e)
    g, diag = build(spec)
    audit_data(spec, diag)
    return Analysis(spec, g, diag, check_graph(spec, g, diag))
