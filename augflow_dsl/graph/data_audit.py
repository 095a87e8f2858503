"""The data half of ``check``: a spec's ``data:`` against what is known of its data set without
reading it (language/datasets.py): an unknown name, a shape or bit depth that cannot hold the set,
labels the set does not have, a missing or misplaced ``path``. Each error is located at the
setting it concerns (file:line:col). Pure Python, no torch."""
from __future__ import annotations

from ..errors import Diagnostics, Loc, SpecError
from ..language import ast
from ..language.datasets import data_problems, spec_condition
from ..language.models import Spec
from ..language.parse import parse_text


def _locations(spec: Spec) -> tuple[Loc | None, dict[str, Loc]]:
    """The location of the ``data:`` entry and of each of its settings' values."""
    try:
        doc = parse_text(spec.text, spec.file)
    except SpecError:  # a Spec built without its text (tests, importers): no locations
        return None, {}
    for entry in doc.entries:
        if entry.head.first == "data":
            pairs = entry.value.pairs if isinstance(entry.value, ast.MapLit) else ()
            return entry.loc, {p.key: p.value.loc or p.loc for p in pairs if p.loc or p.value.loc}
    return None, {}


def audit_data(spec: Spec, diag: Diagnostics) -> None:
    """Add to ``diag`` the errors (and warnings) of ``spec.data`` that need no data to find."""
    problems = data_problems(spec.data, **spec_condition(spec))
    if not problems:
        return
    where, locs = _locations(spec)
    for key, messages in problems.items():
        for message in messages:
            if key == "warn":
                diag.warn(f"data: {message}", locs.get("shape", where))
            else:
                diag.error(f"data: {message}", locs.get(key, where))


__all__ = ["audit_data"]
