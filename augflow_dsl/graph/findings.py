"""What the audit reports: the properties it checks, and a finding (a property a node violates)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Property:
    """A property the audit checks (graph/audit.py:PROPERTIES lists them)."""

    id: str
    statement: str      # one line: what holds
    derivation: str     # how the audit derives it from the graph
    construction: str | None = None  # why a spec cannot violate it, where it cannot
    short: str = ""     # a few words for `augflow-dsl check`


@dataclass(frozen=True)
class Finding:
    """Node ``node`` (its label, as check prints it) violates property ``prop``; ``message``
    says why and what would fix it. ``kind``: ``error`` (check refuses the spec) or ``warning``
    (check flags it and does not list the property as proved; graph/coverage_audit.py)."""

    prop: str
    node: str | None
    message: str
    kind: str = "error"

    def __str__(self) -> str:
        return f"{self.node}: {self.message}" if self.node else self.message


__all__ = ["Finding", "Property"]
