"""``load``: a .flow file (or text) plus overrides -> a typed :class:`~.models.Spec`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..errors import Loc, Source, SpecError
from .evaluate import Evaluator, parse_override
from .models import Spec
from .parse import parse_text


def _overrides(overrides: Mapping[str, Any] | list[str] | None) -> dict[str, Any]:
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    return dict(parse_override(o) for o in overrides)


def loads(text: str | bytes, file: str = "<string>", overrides=None) -> Spec:
    """Parse and evaluate spec text; raises SpecError (with file, line and column)."""
    doc = parse_text(text, file)
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    source = Source(text.lstrip("\ufeff"), file)
    try:
        return Evaluator(doc, source, _overrides(overrides)).run()
    except SpecError as e:
        raise e.with_source(source) from None
    except RecursionError:
        raise SpecError("the spec is nested too deeply", Loc(1, 1), source) from None


def load(path: str | Path, overrides=None) -> Spec:
    """Load a .flow file. ``overrides`` maps ``let`` variables to new values
    (``{"growth": 6}``) or is a list of ``"name=value"`` strings."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise SpecError(f"cannot read {path}: {e.strerror or e}", None, Source("", str(path))) from None
    return loads(data, str(path), overrides)
