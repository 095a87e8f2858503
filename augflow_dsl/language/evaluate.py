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

import math
import re

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from .. import ops as _ops  # noqa: F401  (registers every op)
from ..errors import SpecErrors, all_errors, closest
from ..errors import Diagnostics, Loc, Source, SpecError, did_you_mean
from ..ops.priors import default_prior
from ..ops.registry import COMPOSITE, REGISTRY, OpCall, QFlow
from . import ast
from .models import DataSpec, Definition, Spec, TrainSpec
from .parse import MAX_NUMBER  # numbers beyond it (or inf / nan) are refused

TOP_KEYS = ("flow", "let", "data", "dequantize", "augment", "stages", "prior", "train")
DEF_KINDS = ("module", "net", "q")
CONSTANTS = {"true": True, "false": False, "none": None}
MAX_EXPANSION = 100_000  # ops produced by repetition, to refuse `1000000 * glow`
MAX_DEPTH = 50
_FLOW_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


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


def parse_override(text: str) -> tuple[str, Any]:
    """``"growth=6"`` -> ("growth", 6); values are numbers, true/false or names."""
    if "=" not in text:
        raise SpecError(f"override '{text}' must look like name=value")
    key, _, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not key.isidentifier():
        raise SpecError(f"override '{text}': '{key}' is not a name")
    for conv in (int, float):
        try:
            return key, conv(raw)
        except ValueError:
            pass
    if raw.lower() in CONSTANTS:
        return key, CONSTANTS[raw.lower()]
    return key, raw


TRAIN_PREFIX = "train."


def split_overrides(items) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--set`` items (``NAME=VALUE`` strings) or a mapping -> (spec variables, ``train:`` keys):
    ``train.KEY=VALUE`` reaches the spec's train: block, and ``train.augment=flip,translate`` is
    a list, as the spec writes it. One parser for ``train``, ``check --memory`` and the API."""
    if items is None:
        return {}, {}
    if isinstance(items, dict):
        train = {k[len(TRAIN_PREFIX):]: v for k, v in items.items() if k.startswith(TRAIN_PREFIX)}
        return {k: v for k, v in items.items() if not k.startswith(TRAIN_PREFIX)}, train
    variables: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for item in items:
        if not item.startswith(TRAIN_PREFIX):
            key, value = parse_override(item)
            variables[key] = value
            continue
        key, eq, raw = item[len(TRAIN_PREFIX):].partition("=")
        if not eq or not key.isidentifier():
            raise SpecError(f"--set {item}: expected train.KEY=VALUE")
        if key == "augment":
            train[key] = [v.strip() for v in raw.strip("[]").split(",") if v.strip()]
        else:
            train[key] = parse_override(f"{key}={raw}")[1]
    return variables, train


class Evaluator:
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

    def _record(self, e: SpecError) -> None:
        for x in all_errors(e):
            key = (x.line, x.column, x.message)
            if key not in self._seen:
                self._seen.add(key)
                self.errors.append(x)

    def _guard(self, fn, *args, **kwargs) -> Any:
        """``fn(*args)``, or _BAD after recording its error (fatal errors go on up)."""
        try:
            return fn(*args, **kwargs)
        except _Reported:
            return _BAD
        except SpecError as e:
            if getattr(e, "fatal", False):
                raise
            self._record(e)
            return _BAD

    def _flow_name(self) -> str:
        name_entry = self._need("flow")
        if isinstance(name_entry.value, ast.Str):
            return name_entry.value.value
        name = name_entry.text or self._plain(name_entry.value, "flow")
        if not _FLOW_NAME.fullmatch(name):
            raise SpecError(f"'flow' must be a name such as denseflow-74-10; got '{name}' "
                            f"(quote a name with other characters: flow: \"...\")", name_entry.value.loc)
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

    # -------------------------------------------------------------- values
    def _mapping(self, node: ast.Node, scope: _Scope, what: str) -> dict[str, tuple[Any, Loc | None]]:
        if not isinstance(node, ast.MapLit):
            raise SpecError(f"'{what}' must be a mapping ({{key: value, ...}} or an indented block)", node.loc)
        out: dict[str, tuple[Any, Loc | None]] = {}
        for p in node.pairs:
            if p.key in out:
                self._record(SpecError(f"'{p.key}' is given twice in '{what}'", p.loc))
                continue
            out[p.key] = (self._guard(self.value, p.value, scope), p.loc)
        return out

    def value(self, node: ast.Node, scope: _Scope, depth: int = 0) -> Any:
        """The value of an expression: a number, string, symbol, op, list of ops, q-network or mapping."""
        if depth > MAX_DEPTH:
            raise _fatal(SpecError("expression nested too deeply", node.loc))
        d = depth + 1
        if isinstance(node, ast.Num):
            return node.value
        if isinstance(node, ast.Str):
            return node.value
        if isinstance(node, ast.Name):
            return self._name(node, scope)
        if isinstance(node, ast.Call):
            return self._call(node, scope, d)
        if isinstance(node, ast.ListLit):
            out: list = []
            for item in node.items:
                v = self._guard(self.value, item, scope, d)
                out.extend(v) if isinstance(v, list) and _is_ops(v) else out.append(v)
            return out
        if isinstance(node, ast.MapLit):
            return {k: v for k, (v, _) in self._mapping(node, scope, "mapping").items()}
        if isinstance(node, ast.Neg):
            v = self.value(node.operand, scope, d)
            if v is _BAD:
                return _BAD
            if not _is_num(v):
                raise SpecError(f"cannot negate {_kind(v)}", node.loc)
            return -v
        if isinstance(node, ast.BinOp):
            return self._binop(node, scope, d)
        raise SpecError("unsupported expression", node.loc)  # pragma: no cover

    def _name(self, node: ast.Name, scope: _Scope) -> Any:
        n = node.id
        if n in scope.locals:
            return scope.locals[n]
        if n in self.variables:
            return self.variables[n]
        if n in self._broken and not scope.plain:
            return _BAD
        if n in self.defs and not scope.plain:
            d = self.defs[n]
            if d.params:
                raise SpecError(f"{d.kind} '{n}' takes {len(d.params)} argument(s) ({', '.join(d.params)}); "
                                f"call it as {n}(...)", node.loc)
            return self._expand(d, {}, node.loc)
        if n in REGISTRY and not scope.plain:
            return self._op(n, (), (), node.loc, scope)
        if n in CONSTANTS:
            return CONSTANTS[n]
        return Symbol(n, node.loc)

    def _call(self, node: ast.Call, scope: _Scope, depth: int) -> Any:
        n = node.name
        if n in scope.locals or n in self.variables:
            raise SpecError(f"'{n}' is a variable, not something that can be called", node.loc)
        if n in self._broken:
            return _BAD
        if n in self.defs:
            d = self.defs[n]
            params = d.params or ()
            if len(node.args) > len(params):
                raise SpecError(f"{d.kind} '{n}' takes {len(params)} argument(s) "
                                f"({', '.join(params) or 'none'}); got {len(node.args)}", node.loc)
            bound = {p: self.value(a, scope, depth) for p, a in zip(params, node.args)}
            for kw in node.kwargs:
                if kw.key not in params:
                    raise SpecError(f"{d.kind} '{n}' has no parameter '{kw.key}'{did_you_mean(kw.key, params)}",
                                    kw.loc)
                if kw.key in bound:
                    raise SpecError(f"parameter '{kw.key}' of '{n}' is given twice", kw.loc)
                bound[kw.key] = self.value(kw.value, scope, depth)
            missing = [p for p in params if p not in bound]
            if missing:
                raise SpecError(f"{d.kind} '{n}' is missing argument(s): {', '.join(missing)}", node.loc)
            return self._expand(d, bound, node.loc)
        if n in REGISTRY:
            return self._op(n, node.args, node.kwargs, node.loc, scope, depth)
        raise SpecError(f"unknown op '{n}'{self._op_hint(n)}", node.loc)

    def _expand(self, d: _Def, bound: dict[str, Any], loc: Loc | None) -> Any:
        d.used = True
        if d.name in self._stack:
            raise SpecError(f"{d.kind} '{d.name}' refers to itself", loc)
        self._stack.append(d.name)
        try:
            scope = _Scope(bound, origin=f"{d.kind} {d.name}")
            if d.kind == "q":
                return self._qflow(d, scope)
            v = self.value(d.body, scope)
            if d.kind == "module":
                v = v if isinstance(v, list) else [v]
                v = [self._guard(self._as_op, x, d.body.loc, f"module '{d.name}'") for x in v]
            elif d.kind == "net":
                v = self._as_op(v, d.body.loc, f"net '{d.name}'")
            return v
        finally:
            self._stack.pop()

    def _qflow(self, d: _Def, scope: _Scope) -> QFlow:
        raw = self._mapping(d.body, scope, f"q {d.name}")
        allowed = ("context", "flow", "base")
        for k, (_, loc) in raw.items():
            if k not in allowed:
                self._record(SpecError(f"q '{d.name}' has no setting '{k}'{did_you_mean(k, allowed)}; "
                                       f"its settings are: {', '.join(allowed)}", loc))
        if "flow" not in raw and closest("flow", [k for k in raw if k not in allowed]):
            raise _Reported  # 'flw:' was reported just above
        if "flow" not in raw:
            raise SpecError(f"q '{d.name}' needs a 'flow: [...]' list", d.loc)
        flow_v, flow_loc = raw["flow"]
        flow = [self._guard(self._as_op, x, flow_loc, f"q '{d.name}' flow")
                for x in (flow_v if isinstance(flow_v, list) else [flow_v])]
        ctx = self._as_op(raw["context"][0], raw["context"][1], f"q '{d.name}' context") if "context" in raw else None
        base = (self._as_op(raw["base"][0], raw["base"][1], f"q '{d.name}' base") if "base" in raw
                else default_prior(d.loc))
        if _poisoned(flow) or ctx is _BAD or base is _BAD:
            return _BAD
        return QFlow(d.name, tuple(flow), base, ctx, d.loc)

    def _op(self, name: str, args, kwargs, loc, scope: _Scope, depth: int = 0) -> OpCall:
        op = REGISTRY[name]
        fields = list(op.Args.model_fields)
        given: dict[str, Any] = {}
        locs: dict[str, Loc | None] = {}
        plain = _Scope(scope.locals, scope.origin, plain=True)
        for kw in kwargs:
            if kw.key in given:
                self._record(SpecError(f"argument '{kw.key}' of '{name}' is given twice", kw.loc))
                continue
            given[kw.key] = self._guard(self.value, kw.value, scope if _takes_ops(op, kw.key) else plain, depth)
            locs[kw.key] = kw.loc
        free = [f for f in fields if f not in given]
        if len(args) > len(free):
            raise SpecError(f"'{name}' takes at most {len(fields)} argument(s) ({', '.join(fields) or 'none'}); "
                            f"got {len(args) + len(given)}", loc)
        for f, a in zip(free, args):
            given[f] = self._guard(self.value, a, scope if _takes_ops(op, f) else plain, depth)
            locs[f] = a.loc
        for f, v in given.items():
            if isinstance(v, list) and _is_ops(v):
                self._expanded += len(v)
                if self._expanded > MAX_EXPANSION:
                    raise _fatal(SpecError(f"the spec expands to more than {MAX_EXPANSION:,} ops",
                                           locs.get(f) or loc))
        if any(_poisoned(v) for v in given.values()):
            return _BAD
        _no_bools(op.Args, given, locs, f"'{name}': argument", loc)
        try:
            parsed = op.Args.model_validate(given)
        except ValidationError as exc:
            raise _one_per_key(exc, lambda err: self._arg_error(name, op, err, given, locs, loc)) from None
        return OpCall(name, parsed, loc, scope.origin)

    def _arg_error(self, name, op, err: dict, given, locs, loc) -> SpecError:
        key = str(err["loc"][0]) if err["loc"] else None
        where = locs.get(key) or loc
        fields = list(op.Args.model_fields)
        if err["type"] == "extra_forbidden":
            return SpecError(f"'{name}' has no argument '{key}'{did_you_mean(key, fields)}; its arguments are: "
                             f"{', '.join(fields) or 'none'} (`augflow-dsl ops {name}` describes them)", where)
        if err["type"] == "missing":
            what = op.Args.model_fields[key].description if key in op.Args.model_fields else None
            return SpecError(f"'{name}' needs the argument '{key}'" + (f" ({what})" if what else "")
                             + f": write {name}({key}: ...); `augflow-dsl ops {name}` lists its arguments", loc)
        v = given.get(key)
        if isinstance(v, Symbol) and err["type"] == "is_instance_of":
            return SpecError(f"'{name}': argument '{key}': unknown op '{v}'{self._op_hint(v)}", v.loc or where)
        if isinstance(v, Symbol) and err["type"] == "literal_error":
            choices = err.get("ctx", {}).get("expected", "")
            opts = [c.strip(" '") for c in choices.replace(" or ", ",").split(",")]
            return SpecError(f"'{name}': argument '{key}' cannot be '{v}'{did_you_mean(v, opts)}; "
                             f"expected {choices}", v.loc or where)
        if isinstance(v, Symbol):
            return SpecError(f"'{name}': argument '{key}': '{v}' is not a defined name"
                             f"{did_you_mean(v, list(self.variables) + list(self.defs) + list(REGISTRY))}",
                             v.loc or where)
        ann = repr(op.Args.model_fields[key].annotation) if key in op.Args.model_fields else ""
        if "QFlow" in ann and not isinstance(v, QFlow):
            return SpecError(f"'{name}': argument '{key}' needs a q-network (defined with 'q NAME: ...'); "
                             f"got {_kind(v)}", where)
        if "OpCall" in ann and "list" in ann:
            bad = next((x for x in (v if isinstance(v, list) else [v]) if not isinstance(x, OpCall)), None)
            if bad is not None:
                return SpecError(f"'{name}': argument '{key}' needs ops; got {_kind(bad)}", where)
        elif "OpCall" in ann and not isinstance(v, OpCall):
            if isinstance(v, list) and v and _is_ops(v):
                return SpecError(f"'{name}': argument '{key}' needs one op; got {_kind(v)} (a module is a list: "
                                 f"define a single net with 'net NAME: ...')", where)
            return SpecError(f"'{name}': argument '{key}' needs an op; got {_kind(v)}", where)
        return SpecError(f"'{name}': argument '{key}': {_pyd_msg(err)}", where)

    def _binop(self, node: ast.BinOp, scope: _Scope, depth: int) -> Any:
        left = self.value(node.left, scope, depth)
        right = self.value(node.right, scope, depth)
        if left is _BAD or right is _BAD:
            return _BAD
        op = node.op
        if op == "*" and (_repeatable(left) or _repeatable(right)):
            # the count is the side that is not ops ("2" * step names the "2", not the ops)
            count, item = (left, right) if _is_num(left) or not _repeatable(left) else (right, left)
            if not isinstance(count, int) or isinstance(count, bool):
                raise SpecError(f"repetition needs a whole number; got {_kind(count)} {count!r}", node.loc)
            if count < 1:
                raise SpecError(f"repetition count must be at least 1; got {count}", node.loc)
            items = item if isinstance(item, list) else [item]
            self._expanded += count * len(items)
            if self._expanded > MAX_EXPANSION:
                raise _fatal(SpecError(f"the spec expands to more than {MAX_EXPANSION:,} ops", node.loc))
            return [x for _ in range(count) for x in items]
        if not (_is_num(left) and _is_num(right)):
            bad = left if not _is_num(left) else right
            shown = f" {str(bad)!r}" if isinstance(bad, (str, int, float)) or bad is None else ""
            raise SpecError(f"cannot apply '{op}' to {_kind(bad)}{shown}"
                            + (f"{did_you_mean(bad, list(self.variables) + list(self.defs) + list(REGISTRY))}"
                               if isinstance(bad, Symbol) else ""), node.loc)
        try:
            if op == "+":
                r = left + right
            elif op == "-":
                r = left - right
            elif op == "*":
                r = left * right
            elif op == "/":
                r = left / right
                r = int(r) if isinstance(left, int) and isinstance(right, int) and r == int(r) else r
            else:
                r = left // right
        except ZeroDivisionError:
            raise SpecError("division by zero", node.loc) from None
        except OverflowError:
            raise SpecError("number too large", node.loc) from None
        if not number_ok(r):
            raise SpecError(f"number too large: the result of '{op}' is beyond {MAX_NUMBER:.0e}", node.loc)
        return r

    # -------------------------------------------------------------- ops
    def _op_list(self, node: ast.Node, scope: _Scope, what: str) -> list[OpCall]:
        v = self.value(node, scope)
        items = v if isinstance(v, list) else [v]
        return [self._guard(self._as_op, x, node.loc, what) for x in items]

    def _op_hint(self, name: str) -> str:
        """' (did you mean 'x'?)' for a close op or definition, else where the ops are listed."""
        return did_you_mean(name, list(REGISTRY) + list(self.defs)) or " (`augflow-dsl ops` lists every op)"

    def _as_op(self, v: Any, loc: Loc | None, what: str) -> OpCall:
        if isinstance(v, OpCall) or v is _BAD:
            return v
        if isinstance(v, Symbol):
            raise SpecError(f"unknown op '{v}' in {what}{self._op_hint(v)}",
                            v.loc or loc)
        if isinstance(v, QFlow):
            raise SpecError(f"q '{v.name}' is a q-network; use it inside variational(q: ...) or "
                            f"input(q: ...)", loc)
        if isinstance(v, list) and len(v) == 1:
            return self._as_op(v[0], loc, what)
        raise SpecError(f"{what}: expected an op, got {_kind(v)}", loc)


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


def composite(op: OpCall) -> bool:
    return op.definition.role == COMPOSITE
