"""Syntax tree -> typed :class:`~.models.Spec`: names, definitions, arithmetic, overrides.

Name resolution, innermost first: a definition's parameters, ``let`` variables, named
definitions (``module``, ``net``, ``q``), registered ops, ``true``/``false``/``none``; any
other bare name is a *symbol* (an enum value such as ``columns``), which the op argument
schemas accept or refuse. ``n * x`` with ``n`` an integer and ``x`` an op, a module or a
list repeats ``x``; between numbers it multiplies. Every error is a SpecError located at
the offending node.

Independent errors are all reported: a failing list item, mapping value, argument, variable
or top-level entry is recorded and stands in as ``_BAD``, which everything built from it
becomes too, silently (one mistake, one message); at the end one SpecError (or a SpecErrors
for several) is raised, sorted by position. Limits (expansion, nesting) stop at once.
"""
from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from .. import ops as _ops  # noqa: F401  (registers every op)
from ..errors import Diagnostics, Loc, Source, SpecError, SpecErrors, closest, did_you_mean
from ..ops.priors import default_prior
from ..ops.registry import REGISTRY, OpCall
from . import ast
from .expressions import Expressions
from .models import ConditionSpec, DataSpec, Definition, Spec, TrainSpec
from .overrides import CONSTANTS, TRAIN_PREFIX, parse_override, split_overrides  # noqa: F401 - their old home
from .parse import MAX_NUMBER
from .values import MAX_EXPANSION  # noqa: F401 - its old home (graph.builder reads it here)
from .values import _BAD, _Def, _fatal, _no_bools, _one_per_key, _poisoned, _pyd_msg, _Reported, _Scope, number_ok

TOP_KEYS = ("flow", "let", "data", "condition", "dequantize", "augment", "stages", "prior", "train")
DEF_KINDS = ("module", "net", "q")
# the flow name names the default run and sweep folders (runs/<name>/, sweeps/<name>/): a slug, quoted or not
_FLOW_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,99}")


class Evaluator(Expressions):
    """A parsed document -> its typed Spec (module docstring); ``run()`` evaluates it once."""

    def __init__(self, doc: ast.Document, source: Source, overrides: dict[str, Any] | None = None):
        self.doc = doc
        self.source = source
        self.overrides = dict(overrides or {})
        self.diag = Diagnostics()
        self.defs: dict[str, _Def] = {}
        self.variables: dict[str, Any] = {}
        self.entries: dict[str, ast.Entry] = {}
        self._expanded = 0
        self._stack: list[str] = []
        self.errors: list[SpecError] = []
        self._seen: set[tuple] = set()
        self._broken: set[str] = set()  # names of definitions refused by _collect (uses stay silent)
        self._misspelt: set[str] = set()  # keys an unknown key was probably meant to be

    # -------------------------------------------------------------- top level
    def run(self) -> Spec:
        """The typed spec; raises a SpecError, or a SpecErrors holding every independent error."""
        if not self.doc.entries:
            raise SpecError("the spec is empty: it needs at least 'flow:', 'data:' and 'stages:'", Loc(1, 1))
        try:
            spec = self._run()
        except SpecError as e:  # a fatal one (a limit), or one the guards let through
            self._record(e)
            spec = None
        except _Reported:
            spec = None
        if self.errors:
            errors = sorted(self.errors, key=lambda e: (e.line or 0, e.column or 0))
            raise errors[0] if len(errors) == 1 else SpecErrors(errors)
        if spec is None:  # every failure records an error first; this guards that promise
            raise SpecError("the spec could not be evaluated", Loc(1, 1))
        return spec

    def _flow_name(self) -> str:
        name_entry = self._need("flow")
        if isinstance(name_entry.value, ast.Str):
            name = name_entry.value.value
        else:
            name = name_entry.text or self._plain(name_entry.value, "flow")
        if not _FLOW_NAME.fullmatch(name):
            raise SpecError(f"'flow' must be a name such as denseflow-74-10 (letters, digits, '.', '_' and '-', "
                            f"not starting with '.', at most 100 characters: it names the folders "
                            f"runs/<name>/ and sweeps/<name>/); got {name!r}", name_entry.value.loc)
        return name

    def _stages(self) -> list:
        stages = self._op_list(self._need("stages").value, _Scope(), "stages")
        if not stages:
            raise SpecError("'stages' is empty: a flow needs at least one layer", self._need("stages").loc)
        return stages

    def _run(self) -> Spec | None:
        self._collect()
        self._variables()
        name = self._guard(self._flow_name)
        data = self._guard(self._data)
        condition = self._guard(self._condition)
        stages = self._guard(self._stages)
        dequant = self._guard(self._optional_op, "dequantize")
        augment = self._guard(self._optional_op, "augment")
        prior = self._guard(self._optional_op, "prior") or default_prior()
        train = self._guard(self._train)
        if self.errors:
            return None
        for d in self.defs.values():
            if not d.used:
                self.diag.warn(f"{d.kind} '{d.name}' is defined but never used", d.loc)
        for w in self.diag.warnings:
            w.with_source(self.source)
        return Spec(name=str(name), file=self.source.file, text=self.source.text, variables=dict(self.variables),
                    data=data, dequantize=dequant, augment=augment, stages=stages, prior=prior, train=train,
                    condition=condition,
                    definitions={k: Definition(kind=d.kind, name=d.name, params=d.params or (),
                                               line=d.loc.line if d.loc else None,
                                               column=d.loc.column if d.loc else None, used=d.used)
                                 for k, d in self.defs.items()},
                    warnings=list(self.diag.warnings))

    def _collect(self) -> None:
        for e in self.doc.entries:
            self._guard(self._collect_one, e)

    def _collect_one(self, e: ast.Entry) -> None:
        h = e.head
        if h.name is not None:
            if h.first not in DEF_KINDS:
                self._broken.add(h.name)
                raise SpecError(f"unknown kind of definition '{h.first}'"
                                f"{did_you_mean(h.first, DEF_KINDS)}; definitions are: "
                                + ", ".join(DEF_KINDS), e.loc)
            if h.name in self.defs:
                first = self.defs[h.name].loc
                raise SpecError(f"duplicate definition '{h.name}' (first defined at line "
                                f"{first.line if first else '?'})", e.loc)
            if h.name in REGISTRY:
                raise SpecError(f"definition '{h.name}' has the name of a built-in op; choose another name",
                                e.loc)
            if h.params is not None and len(set(h.params)) != len(h.params):
                self._broken.add(h.name)
                raise SpecError(f"{h.first} '{h.name}' repeats a parameter name", e.loc)
            self.defs[h.name] = _Def(h.first, h.name, h.params, e.value, e.loc)
        else:
            if h.first in DEF_KINDS:
                raise SpecError(f"'{h.first}' needs a name: write '{h.first} NAME: ...'", e.loc)
            if h.params is not None:
                raise SpecError(f"'{h.first}' takes no parameters", e.loc)
            if h.first not in TOP_KEYS:
                self._misspelt.update(closest(h.first, TOP_KEYS))
                raise SpecError(f"unknown key '{h.first}'{did_you_mean(h.first, TOP_KEYS + DEF_KINDS)}; "
                                f"the keys are: {', '.join(TOP_KEYS)}", e.loc)
            if h.first in self.entries:
                raise SpecError(f"duplicate key '{h.first}' (first at line {self.entries[h.first].loc.line})",
                                e.loc)
            self.entries[h.first] = e

    def _need(self, key: str) -> ast.Entry:
        if key not in self.entries:
            if key in self._misspelt:  # 'stagse:' was reported; 'no stages' would say it again
                raise _Reported
            raise SpecError(f"the spec has no '{key}:' entry", Loc(1, 1))
        return self.entries[key]

    def _plain(self, node: ast.Node, what: str) -> str:
        if isinstance(node, (ast.Name, ast.Str)):
            return node.id if isinstance(node, ast.Name) else node.value
        raise SpecError(f"'{what}' must be a name", node.loc)

    def _variables(self) -> None:
        entry = self.entries.get("let")
        pairs: tuple[ast.Pair, ...] = ()
        if entry is not None:
            if not isinstance(entry.value, ast.MapLit):  # fatal: every use of a variable would fail
                raise _fatal(SpecError("'let' must be a mapping of names to values, e.g. let: {growth: 10}",
                                       entry.value.loc))
            pairs = entry.value.pairs
        seen: dict[str, ast.Pair] = {}
        for p in pairs:
            self._guard(self._declare, p, seen)
        for key in self.overrides:
            self._guard(self._check_override, key, seen, entry)
        for key, p in seen.items():
            self.variables[key] = self._guard(self._variable, key, p, entry)

    def _declare(self, p: ast.Pair, seen: dict[str, ast.Pair]) -> None:
        if p.key in seen:
            raise SpecError(f"variable '{p.key}' is defined twice", p.loc)
        if p.key in self.defs:
            raise SpecError(f"variable '{p.key}' has the name of a {self.defs[p.key].kind} definition", p.loc)
        if p.key in CONSTANTS:
            raise SpecError(f"'{p.key}' is a constant and cannot be a variable", p.loc)
        seen[p.key] = p

    def _check_override(self, key: str, seen: dict, entry) -> None:
        if key not in seen:
            raise SpecError(f"override of '{key}': the spec defines no variable '{key}'"
                            f"{did_you_mean(key, seen)}"
                            + (f"; its variables are: {', '.join(seen)}" if seen else "; it has no 'let'"),
                            entry.loc if entry else Loc(1, 1))

    def _variable(self, key: str, p: ast.Pair, entry) -> Any:
        if key in self.overrides:
            if not number_ok(self.overrides[key]):
                raise SpecError(f"override of '{key}': {self.overrides[key]!r} is not a finite number of at most "
                                f"{MAX_NUMBER:.0e}", entry.loc if entry else Loc(1, 1))
            return self.overrides[key]
        value = self.value(p.value, _Scope())
        if value is _BAD:
            return _BAD
        if not isinstance(value, (int, float, str, bool)) or value is None:
            raise SpecError(f"variable '{key}' must be a number, a name or a boolean", p.value.loc)
        return value

    def _data(self) -> DataSpec:
        e = self._need("data")
        raw = self._mapping(e.value, _Scope(plain=True), "data")
        return self._model(DataSpec, raw, e.value, "data")

    def _condition(self) -> ConditionSpec | None:
        e = self.entries.get("condition")
        if e is None:
            return None
        raw = self._mapping(e.value, _Scope(plain=True), "condition")
        return self._model(ConditionSpec, raw, e.value, "condition")

    def _train(self) -> TrainSpec:
        e = self.entries.get("train")
        if e is None:
            return TrainSpec()
        raw = self._mapping(e.value, _Scope(plain=True), "train")
        return self._model(TrainSpec, raw, e.value, "train")

    def _optional_op(self, key: str) -> OpCall | None:
        e = self.entries.get(key)
        if e is None:
            return None
        v = self.value(e.value, _Scope())
        return self._as_op(v, e.value.loc, key)

    def _model(self, cls, raw: dict, node: ast.Node, what: str):
        if any(_poisoned(v) for v, _ in raw.values()):
            raise _Reported
        _no_bools(cls, {k: v for k, (v, _) in raw.items()}, {k: loc for k, (_, loc) in raw.items()},
                  f"'{what}': setting", node.loc)
        try:
            return cls.model_validate({k: v for k, (v, _) in raw.items()})
        except ValidationError as exc:
            raise _one_per_key(exc, lambda err: self._setting_error(cls, err, raw, node, what)) from None

    def _setting_error(self, cls, err: dict, raw: dict, node: ast.Node, what: str) -> SpecError:
        key = err["loc"][0] if err["loc"] else None
        loc = raw[key][1] if key in raw else node.loc
        if err["type"] == "extra_forbidden":
            return SpecError(f"'{what}' has no setting '{key}'{did_you_mean(str(key), cls.model_fields)}; "
                             f"its settings are: {', '.join(cls.model_fields)}", loc)
        return SpecError(f"'{what}': " + (f"'{key}': " if key is not None else "") + _pyd_msg(err), loc)


__all__ = ["Evaluator", "MAX_EXPANSION", "TRAIN_PREFIX", "parse_override", "split_overrides"]
