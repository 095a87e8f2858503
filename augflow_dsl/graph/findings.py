"""What the audit reports: a finding (a property a node violates) and a proof (a property it established)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    """Node ``node`` (its label, as check prints it) violates property ``prop``; ``message``
    says why and what would fix it."""

    prop: str
    node: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.node}: {self.message}" if self.node else self.message


__all__ = ["Finding"]
