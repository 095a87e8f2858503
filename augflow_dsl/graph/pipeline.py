"""The one load -> build -> check pipeline: every caller that needs a spec's graph or its
report (check, compile, train, the memory estimate, diff, draw, solve, graph export) runs it
through :func:`analyze`. Pure Python, no torch."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from ..errors import Diagnostics, Source, SpecError, all_errors
from ..language.load import load
from ..language.models import Spec
from .builder import build
from .check import CheckReport, check_graph


@dataclass(frozen=True)
class Analysis:
    """A spec, its graph and its report. ``spec`` and ``graph`` are None when the spec did not
    load (the report then holds the load errors)."""

    spec: Spec | None
    graph: nx.DiGraph | None
    diagnostics: Diagnostics | None
    report: CheckReport

    @property
    def valid(self) -> bool:
        return self.report.valid

    def raise_if_invalid(self) -> Analysis:
        """Raise the first error as a located :class:`SpecError` (with every other error
        listed after it) unless the spec is valid; returns self."""
        if self.valid:
            return self
        if self.spec is None or self.graph is None:
            raise SpecError("\n".join(e.get("text") or e.get("message", "") for e in self.report.errors))
        src = Source(self.spec.text, self.spec.file)
        texts = [e.get("text") or e.get("message", "") for e in self.report.errors]
        raise SpecError(texts[0] + ("" if len(texts) == 1 else "\n" + "\n".join(texts[1:])), None, src)


def analyze(spec: Spec | str | Path, overrides=None) -> Analysis:
    """Load ``spec`` (a Spec, or a path with ``overrides``), build its graph and check it.
    Never raises for a bad spec: a spec that does not load gives a report with its errors."""
    if not isinstance(spec, Spec):
        try:
            spec = load(spec, overrides)
        except SpecError as e:  # the spec did not load: no graph, so the report is not complete
            report = CheckReport(name=str(spec), file=str(spec), valid=False, complete=False,
                                 errors=[x.to_dict() | {"text": str(x)} for x in all_errors(e)])
            return Analysis(None, None, None, report)
    g, diag = build(spec)
    return Analysis(spec, g, diag, check_graph(spec, g, diag))
