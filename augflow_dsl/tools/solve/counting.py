"""Counting a point: the spec, parsed once, evaluated with the point as overrides, its graph built and
its nodes' parameters summed (``check``'s ``parameters.total`` without the audit); the audit itself
only for the point about to be answered. No torch."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

class Counter:
    """Exact parameter counts of points, memoized; None for an invalid point (one that does not
    evaluate, or whose graph stops at a shape error)."""

    def __init__(self, path: str, fixed: dict[str, Any], names: Sequence[str]):
        from ...errors import Source, SpecError
        from ...language.parse import parse_text
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise SpecError(f"cannot read {path}: {e.strerror or e}", None, Source("", path)) from None
        self.doc = parse_text(data, path)
        self.source = Source(data.decode("utf-8").lstrip("\ufeff"), path)
        self.fixed, self.names = fixed, tuple(names)
        self.known: dict[tuple[int, ...], int | None] = {}

    def spec(self, values: Mapping[str, Any] | None = None):
        """The spec with ``values`` over the fixed overrides: what ``load`` gives (raises SpecError)."""
        from ...errors import Loc, SpecError
        from ...language.evaluate import Evaluator
        try:
            return Evaluator(self.doc, self.source, {**self.fixed, **(values or {})}).run()
        except SpecError as e:
            raise e.with_source(self.source) from None
        except RecursionError:
            raise SpecError("the spec is nested too deeply", Loc(1, 1), self.source) from None

    def _point_spec(self, point: tuple[int, ...]):
        """The spec of ``point``, or None when it does not evaluate."""
        from ...errors import SpecError
        try:
            return self.spec(dict(zip(self.names, point)))
        except SpecError:
            return None

    def __call__(self, point: tuple[int, ...]) -> int | None:
        if point not in self.known:
            from ...graph.builder import build
            spec = self._point_spec(point)
            self.known[point] = None
            if spec is not None:
                g, diag = build(spec)
                if complete(g) and not diag.errors:
                    self.known[point] = parameters(g)
        return self.known[point]

    def check(self, point: tuple[int, ...]):
        """The full check's report for ``point``: the one pipeline's audit (graph/pipeline.py ``analyze``)
        of the spec evaluated with these overrides, what ``augflow-dsl check SPEC --set ...`` runs."""
        from ...graph.pipeline import analyze
        return analyze(self._point_spec(point)).report

    def valid(self) -> dict[tuple[int, ...], int]:
        return {p: c for p, c in self.known.items() if c is not None}


def complete(g) -> bool:
    """Whether the build of ``g`` went to the end (no shape error stopped it)."""
    from ...graph.schema import graph_info
    return graph_info(g).complete


def parameters(g) -> int:
    """The analytic parameter count: the sum of the nodes' own parameters."""
    from ...graph.schema import node
    return sum(node(g, n).params for n in g)
