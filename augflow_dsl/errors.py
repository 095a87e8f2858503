"""The project's own error type: every problem in a spec is reported as a SpecError.

A SpecError carries where the problem is (file, line, column, the offending source
line) and what is wrong in plain words; ``str(err)`` renders it as

    specs/x.flow:12:7: error: unknown op 'actnrom' (did you mean 'actnorm'?)
      module glow: [actnrom, conv1x1]
                    ^
"""
from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass, field
from typing import Iterable

# what must not reach a terminal from user input: C0 controls but newline and tab (ESC starts the
# terminal's escape sequences, CR rewrites the line), DEL, C1 controls (U+009B is a one-byte CSI) and
# the bidirectional overrides that reorder the text a reader sees (CVE-2021-42574, "Trojan Source")
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every control character written as an escape (``\\x1b``, ``\\u202e``), for
    printing what came from user input: spec lines, names, paths. Newlines and tabs are kept."""
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], text)


@functools.lru_cache(maxsize=1)
def _safe_console_class():
    from rich.console import Console

    class SafeConsole(Console):
        """rich's Console; every string it renders (markup included) passes :func:`printable` first."""

        def render_str(self, text: str, **kwargs):
            return super().render_str(printable(text), **kwargs)

    return SafeConsole


def SafeConsole(*args, **kwargs):  # noqa: N802 - stands in for rich.console.Console (imported only when called)
    """A ``rich.console.Console`` whose printed strings have their control characters escaped, so a
    path or name holding ESC cannot drive the terminal. Every command prints through one."""
    return _safe_console_class()(*args, **kwargs)


@dataclass(frozen=True)
class Loc:
    """A position in a spec's source text (1-based line and column)."""

    line: int
    column: int
    end_line: int | None = None
    end_column: int | None = None

    @staticmethod
    def of(meta) -> "Loc | None":
        """The location of a lark ``meta`` / token, or None when it has none."""
        line = getattr(meta, "line", None)
        if line is None:
            return None
        return Loc(line, meta.column, getattr(meta, "end_line", None), getattr(meta, "end_column", None))


@dataclass
class Source:
    """A spec's text and the name it is reported under."""

    text: str
    file: str = "<string>"

    def line_text(self, line: int) -> str:
        # split at "\n" only, as the parser counts lines (str.splitlines also splits at U+2028 etc.)
        lines = self.text.split("\n")
        return lines[line - 1].rstrip("\r") if 0 < line <= len(lines) else ""


class SpecError(Exception):
    """An invalid spec: syntax, an unknown name, a bad argument, an impossible shape."""

    def __init__(self, message: str, loc: Loc | None = None, source: Source | None = None,
                 node: str | None = None, kind: str = "error"):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.source = source
        self.node = node
        self.kind = kind

    def with_source(self, source: Source) -> "SpecError":
        if self.source is None:
            self.source = source
        return self

    @property
    def file(self) -> str | None:
        return self.source.file if self.source else None

    @property
    def line(self) -> int | None:
        return self.loc.line if self.loc else None

    @property
    def column(self) -> int | None:
        return self.loc.column if self.loc else None

    def to_dict(self) -> dict:
        return {"file": self.file or "<spec>", "line": self.line, "column": self.column,
                "node": self.node, "message": self.message, "kind": self.kind}

    def __str__(self) -> str:
        where = printable(self.file or "<spec>")
        if self.loc:
            where += f":{self.loc.line}:{self.loc.column}"
        text = f"{where}: {self.kind}: "
        if self.node:
            text += f"{printable(self.node)}: "
        text += printable(self.message)
        if self.source and self.loc:
            src = self.source.line_text(self.loc.line)
            if src:  # escaped, and the caret under the escaped text
                caret = " " * len(printable(src[: max(self.loc.column, 1) - 1])) + "^"
                text += f"\n  {printable(src)}\n  {caret}"
        return text


class SpecErrors(SpecError):
    """Several independent problems in one spec, all found in one pass; ``errors`` lists them in
    the order of the source. It reads as its first error (``loc``, ``message``) for code that
    expects one, and ``str()`` renders every one of them."""

    def __init__(self, errors: list[SpecError]):
        first = errors[0]
        super().__init__(first.message, first.loc, first.source, first.node, first.kind)
        self.errors = list(errors)

    def with_source(self, source: Source) -> "SpecErrors":
        for e in self.errors:
            e.with_source(source)
        return super().with_source(source)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def all_errors(err: SpecError) -> list[SpecError]:
    """The problems a SpecError stands for: its ``errors`` for a SpecErrors, else itself."""
    return list(getattr(err, "errors", [err]))


def closest(name: str, candidates: Iterable[str], n: int = 1) -> list[str]:
    """Up to ``n`` candidates close to ``name`` (difflib ratio >= 0.6), closest first."""
    return difflib.get_close_matches(name, sorted(set(candidates)), n=n, cutoff=0.6)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest candidate, or '' when none is close."""
    close = closest(name, candidates)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass
class Diagnostics:
    """Errors and warnings collected by a pass that does not stop at the first one."""

    errors: list[SpecError] = field(default_factory=list)
    warnings: list[SpecError] = field(default_factory=list)

    def error(self, message: str, loc: Loc | None = None, node: str | None = None) -> None:
        self.errors.append(SpecError(message, loc, node=node))

    def warn(self, message: str, loc: Loc | None = None, node: str | None = None) -> None:
        self.warnings.append(SpecError(message, loc, node=node, kind="warning"))
