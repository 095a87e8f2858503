"""The values an evaluated spec is made of and the checks on them: the stand-in for a value whose
error is already reported (``_BAD``), symbols, definitions and scopes, the limits, and the
predicates the evaluator asks of a value (number, ops, repeatable, its kind in a message)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..errors import Loc, SpecError, SpecErrors
from ..ops.registry import OpCall, QFlow
from . import ast
from .parse import MAX_NUMBER  # numbers beyond it (or inf / nan) are refused

MAX_EXPANSION = 10_000  # ops produced by repetition (issue 24: `100000 * actnorm` took 7 minutes in check)
MAX_DEPTH = 50


class _Bad:
    """The value of something whose error is already recorded."""

    def __repr__(self) -> str:
        return "<error>"


_BAD = _Bad()


class _Reported(Exception):
    """Raised where going on needs a value whose error is already recorded (no new message)."""


def _fatal(e: SpecError) -> SpecError:
    """Mark an error that ends the evaluation at once (a limit: going on would only repeat it)."""
    e.fatal = True
    return e


class Symbol(str):
    """A bare name that is neither a variable nor a definition nor an op (e.g. ``columns``)."""

    loc: Loc | None = None

    def __new__(cls, value: str, loc: Loc | None):
        s = super().__new__(cls, value)
        s.loc = loc
        return s


@dataclass
class _Def:
    kind: str
    name: str
    params: tuple[str, ...] | None
    body: ast.Node
    loc: Loc | None
    used: bool = False


@dataclass
class _Scope:
    locals: dict[str, Any] = field(default_factory=dict)
    origin: str = ""
    plain: bool = False  # settings (data, train): bare names are variables or symbols only


def _one_per_key(exc: ValidationError, make) -> SpecError:
    """One SpecError per refused argument (pydantic may list several errors for one key: a union
    tried member by member), a SpecErrors when more than one argument is refused."""
    errors, keys = [], set()
    for err in exc.errors():
        key = err["loc"][0] if err["loc"] else None
        if key not in keys:
            keys.add(key)
            errors.append(make(err))
    return errors[0] if len(errors) == 1 else SpecErrors(errors)


def _poisoned(v) -> bool:
    """Whether ``v`` is, or holds, the value of something that failed (already reported)."""
    if v is _BAD:
        return True
    if isinstance(v, (list, tuple)):
        return any(_poisoned(x) for x in v)
    if isinstance(v, dict):
        return any(_poisoned(x) for x in v.values())
    return False


def _no_bools(cls, given: dict, locs: dict, what: str, loc) -> None:
    """Refuse true/false for a field that is not a boolean (pydantic would read true as 1)."""
    for key, v in given.items():
        f = cls.model_fields.get(key)
        if isinstance(v, bool) and f is not None and "bool" not in repr(f.annotation):
            raise SpecError(f"{what} '{key}' takes {_wants(f.annotation)}, not the boolean {str(v).lower()}",
                            locs.get(key) or loc)


def _wants(annotation) -> str:
    text = repr(annotation)
    if "Literal" in text:
        return "one of its names"
    if "int" in text and "float" not in text:
        return "a whole number"
    if "float" in text or "int" in text:
        return "a number"
    if "QFlow" in text:
        return "a q-network"
    if "OpCall" in text:
        return "ops" if "list" in text else "an op"
    return "a value of another type"


def _takes_ops(op, field_name: str) -> bool:
    """Whether an argument takes ops or q-networks (else bare names in it are symbols)."""
    f = op.Args.model_fields.get(field_name)
    if f is None:
        return True
    text = repr(f.annotation)
    return "OpCall" in text or "QFlow" in text


def _pyd_msg(err: dict) -> str:
    msg = err.get("msg", "invalid value")
    if err.get("type") == "value_error" and msg.startswith("Value error, "):  # a model validator's own sentence
        return msg[len("Value error, "):]
    if "input" in err and not isinstance(err["input"], (dict, list, OpCall)):
        msg += f" (got {err['input']!r})"
    return msg


def number_ok(v) -> bool:
    """Whether a number is finite and at most MAX_NUMBER in size (what a spec may hold)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return True
    return math.isfinite(v) and abs(v) <= MAX_NUMBER


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_ops(v: list) -> bool:
    return all(isinstance(x, OpCall) or x is _BAD for x in v)


def _repeatable(v) -> bool:
    return isinstance(v, OpCall) or (isinstance(v, list) and bool(v) and _is_ops(v))


def _kind(v) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if _is_num(v):
        return "a number"
    if isinstance(v, Symbol):
        return "the name"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, OpCall):
        return f"the op '{v.op}'"
    if isinstance(v, list):
        if v and _is_ops(v):
            return f"a list of {len(v)} op{'s' if len(v) != 1 else ''}"
        return "a list"
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, QFlow):
        return f"the q-network '{v.name}'"
    return type(v).__name__
