"""Expressions -> values: names, calls of ops and definitions, q-networks, mappings and the
arithmetic of ``n * x`` (repetition of ops, modules and lists; products of numbers).

:class:`Expressions` is the half of the :class:`~.evaluate.Evaluator` that evaluates one
expression; it records independent errors (``_record`` / ``_guard``) and reads the evaluator's
``defs``, ``variables``, ``_broken``, ``_stack`` and ``_expanded``.
"""
from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .. import ops as _ops  # noqa: F401  (registers every op)
from ..errors import Loc, SpecError, all_errors, closest, did_you_mean
from ..ops.priors import default_prior
from ..ops.net_list import NET_LAYERS, Layers, NetLayerCall
from ..ops.registry import REGISTRY, OpCall, QFlow
from . import ast
from .overrides import CONSTANTS
from .parse import MAX_NUMBER
from .values import (_BAD, MAX_DEPTH, MAX_EXPANSION, Symbol, _Def, _fatal, _kind, _no_bools, _one_per_key,
                     _poisoned, _pyd_msg, _Reported, _repeatable, _Scope, _takes_ops, _is_num, _is_ops, number_ok)


class Expressions:
    """Evaluates expressions of a spec (see the module docstring); the Evaluator sets its state."""

    errors: list[SpecError]
    _seen: set[tuple]

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
            if d.kind == "net" and isinstance(d.body, ast.ListLit) and not self._one_op(d.body):
                return self._net_layers(d.body, scope)
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

        def arg(f: str, node: ast.Node):
            """A net given as a list of layers (``net: [conv(3, 64), relu, ...]``, ``layers(list: [...])``)
            is one call of the net op ``layers``; any other argument is a value."""
            wants_layers = "NetLayerCall" in repr(getattr(op.Args.model_fields.get(f), "annotation", ""))
            if isinstance(node, ast.ListLit) and (f == "net" or wants_layers):
                v = self._guard(self._net_layers, node, scope)
                return v if f == "net" or v is _BAD else v.args.list
            return self._guard(self.value, node, scope if _takes_ops(op, f) else plain, depth)

        for kw in kwargs:
            if kw.key in given:
                self._record(SpecError(f"argument '{kw.key}' of '{name}' is given twice", kw.loc))
                continue
            given[kw.key] = arg(kw.key, kw.value)
            locs[kw.key] = kw.loc
        free = [f for f in fields if f not in given]
        if len(args) > len(free):
            raise SpecError(f"'{name}' takes at most {len(fields)} argument(s) ({', '.join(fields) or 'none'}); "
                            f"got {len(args) + len(given)}", loc)
        for f, a in zip(free, args):
            given[f] = arg(f, a)
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

    # -------------------------------------------------------------- nets written as layers
    def _net_layers(self, node: ast.ListLit, scope: _Scope) -> OpCall:
        """A list of net layers (:mod:`augflow_dsl.ops.net_list`) -> one call of the net op :class:`Layers`.
        Items are layer names and calls (their own namespace: ``actnorm`` is the net layer) and
        ``n * item`` repetitions; arguments are values (numbers, the definition's parameters)."""
        items: list = []
        for item in node.items:
            got = self._guard(self._net_layer_items, item, scope)
            items.extend(got) if isinstance(got, list) else items.append(got)
        if not items:
            raise SpecError("a net written as layers needs at least one layer", node.loc)
        if _poisoned(items):
            return _BAD
        return OpCall(Layers.name, Layers.Args(list=tuple(items)), node.loc, scope.origin)

    def _one_op(self, node: ast.ListLit) -> bool:
        """``[glow_net(filters: 8)]``: a one-item list naming an op or a definition, not a net layer (a
        net definition written so before nets could be lists stays one op)."""
        item = node.items[0] if len(node.items) == 1 else None
        name = item.id if isinstance(item, ast.Name) else item.name if isinstance(item, ast.Call) else None
        return name is not None and name not in NET_LAYERS and (name in REGISTRY or name in self.defs)

    def _net_layer_items(self, node: ast.Node, scope: _Scope) -> list[NetLayerCall]:
        plain = _Scope(scope.locals, scope.origin, plain=True)
        if isinstance(node, ast.ListLit):
            return [x for item in node.items for x in self._net_layer_items(item, scope)]
        if isinstance(node, ast.BinOp) and node.op == "*":
            count_node, item = (node.left, node.right) if isinstance(node.right, (ast.Name, ast.Call, ast.ListLit)) \
                else (node.right, node.left)
            count = self.value(count_node, plain)
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise SpecError(f"repetition of net layers needs a whole number of at least 1; got {count!r}",
                                count_node.loc)
            self._expanded += count
            if self._expanded > MAX_EXPANSION:
                raise _fatal(SpecError(f"the spec expands to more than {MAX_EXPANSION:,} ops", node.loc))
            return count * self._net_layer_items(item, scope)
        if isinstance(node, ast.Name):
            name, args, kwargs = node.id, (), ()
        elif isinstance(node, ast.Call):
            name, args, kwargs = node.name, node.args, node.kwargs
        else:
            raise SpecError("a net's layer list holds net layers such as conv(3, 64), relu, zero_conv(3); "
                            "got an expression", node.loc)
        if name not in NET_LAYERS:
            other = (" ('%s' is a flow op or a definition; a net's list holds net layers only)" % name
                     if name in REGISTRY or name in self.defs else "")
            raise SpecError(f"unknown net layer '{name}'{did_you_mean(name, NET_LAYERS) or other}; the net layers "
                            f"are: {', '.join(NET_LAYERS)} (`augflow-dsl ops` describes them)", node.loc)
        schema = NET_LAYERS[name].Args
        fields = list(schema.model_fields)
        locs = {kw.key: kw.loc for kw in kwargs}
        free = [f for f in fields if f not in locs]
        if len(args) > len(free):
            raise SpecError(f"net layer '{name}' takes at most {len(fields)} argument(s) "
                            f"({', '.join(fields) or 'none'}); got {len(args) + len(locs)}", node.loc)
        given: dict[str, Any] = {}
        for f, a in [*((kw.key, kw.value) for kw in kwargs), *zip(free, args)]:
            locs[f] = locs.get(f) or a.loc
            annotation = repr(getattr(schema.model_fields.get(f), "annotation", ""))
            if "NetLayerCall" in annotation:
                inner = self._net_layer_items(a, scope)  # a wrapped layer: weightnorm(conv(3, 64))
                if annotation.startswith("tuple"):  # a block of layers: residual([conv(3, 64), relu])
                    given[f] = tuple(inner)
                elif len(inner) != 1:
                    raise SpecError(f"net layer '{name}' wraps one layer; got {len(inner)}", a.loc)
                else:
                    given[f] = inner[0]
            else:
                given[f] = self.value(a, plain)
        if _poisoned(list(given.values())):
            raise _Reported
        _no_bools(schema, given, locs, f"net layer '{name}': argument", node.loc)
        try:
            parsed = schema.model_validate(given)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = str(err["loc"][0]) if err["loc"] else None
            if err["type"] == "extra_forbidden":
                msg = f"net layer '{name}' has no argument '{key}'{did_you_mean(key, fields)}; its arguments are: " \
                      f"{', '.join(fields) or 'none'}"
            else:
                msg = f"net layer '{name}': argument '{key}': {_pyd_msg(err)}"
            raise SpecError(msg, locs.get(key) or node.loc) from None
        return [NetLayerCall(name, parsed, node.loc)]

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


__all__ = ["Expressions"]
