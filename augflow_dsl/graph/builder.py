"""Typed spec -> NetworkX graph, the IR every later stage reads. Pure Python, no torch.

The graph's only writer: one node per operation, one edge per tensor, each carrying its
typed record (:mod:`.schema`: :class:`~.schema.NodeInfo`, :class:`~.schema.EdgeInfo`, and
:class:`~.schema.GraphInfo` for the graph), written with the schema's helpers; a record that
changes after it was added (a step's costs once its nets are counted, its ``reads``, its
``block``) is replaced through :func:`~.schema.update_node`. The schema documents the edge kinds.

Every step of the model chain carries ``reads``: the ids of the earlier nodes whose outputs
its context reads (concatenated on channels; a cross-unit g reads the block input and the
earlier unit outputs), and ``env``, what its layer is built with. The model chain itself is
the path of data edges from the input (:func:`step_path`).

Building stops at the first shape error: shapes after it are unknown.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import networkx as nx

from ..errors import Diagnostics, Loc, SpecError
from ..ops.dequantize import default_dequantizer
from ..ops.regions import Read, Region
from ..ops.registry import (AUGMENT, AUGMENT_AT_BLOCK, AUGMENT_AT_INPUT, BIJECTION, COMPOSITE, CONTEXT, DEQUANTIZER,
                            DROP, NET, PRIOR, REGISTRY, OpCall, OpEnv, OpShapeError, QFlow, Shape, names)
from ..ops.shapes import fmt, numel
from ..language.evaluate import MAX_EXPANSION
from ..language.models import Spec
from . import schema as S
from .schema import (AUGMENT_ID, CONDITION, CONDITIONER, DATA, DEQUANTIZE_ID, DROPPED, FACTORED, FINAL, INPUT, KEPT,
                     MODEL, OUT, PARAMS, PRIOR_ID, Q_BASE, SAMPLE, EdgeInfo, GraphInfo, NodeInfo, QParts)


class BuildStop(Exception):
    """Raised after a shape error has been recorded: nothing after it can be shaped."""


@dataclass
class _Cursor:
    node: str
    shape: Shape
    port: str = OUT
    bits: int | None = None  # the bit depth while the tensor still holds integer data


@dataclass
class Builder:
    spec: Spec
    g: nx.DiGraph = field(default_factory=nx.DiGraph)
    diag: Diagnostics = field(default_factory=Diagnostics)
    _order: int = 0

    # ------------------------------------------------------------------ primitives
    def _add(self, nid: str, **fields) -> str:
        """Add a node with the record made of ``fields`` (the fields of :class:`~.schema.NodeInfo`
        but its ``order``, which is the insertion order); returns its id, made unique."""
        if nid in self.g:
            i = 2
            while f"{nid}#{i}" in self.g:
                i += 1
            nid = f"{nid}#{i}"
        S.add_node(self.g, nid, NodeInfo(order=self._order, **fields))
        self._order += 1
        return nid

    def _edge(self, u: str, v: str, kind: str, shape: Shape, **fields) -> None:
        S.add_edge(self.g, u, v, EdgeInfo(kind=kind, shape=shape, **fields))

    def _fail(self, message: str, call: OpCall | None, label: str, loc=None) -> None:
        self.diag.error(message, loc or (call.loc if call is not None else None), node=label)
        raise BuildStop

    def _shape(self, fn, call: OpCall, label: str):
        """Run an op's shape / cost rule; its failure becomes a located error, never a traceback (at
        the op, or where the error says: a net layer of a net written as layers)."""
        try:
            return fn()
        except OpShapeError as e:
            self._fail(str(e), call, label, getattr(e, "loc", None))
        except BuildStop:
            raise
        except Exception as e:  # an op's rule that does not guard its arguments (e.g. a zero factor)
            op = call.op if call is not None else "op"
            self._fail(f"'{op}' cannot be applied here with these arguments "
                       f"({type(e).__name__}: {e}); this is a gap in the op's argument checks", call, label)

    # ------------------------------------------------------------------ ops
    def op(self, call: OpCall, cur: _Cursor, label: str, chain: str, group: str, unit: str,
           env: OpEnv = OpEnv(), allowed=(BIJECTION, DROP), reads: list[_Cursor] | None = None,
           nid: str | None = None, block: tuple[int, int] | None = None) -> _Cursor:
        """Add one op (its conditioner nets and q-networks) after ``cur``; returns the new cursor.
        ``block``: (block, unit) of a step inside a block (the audit derives g's allowed reads from it)."""
        op = call.definition
        name = f"{label}: {call.op}" if label else call.op
        env = self._conditioned(env)
        if op.role not in allowed:
            self._fail(_misplaced(call.op, op.role, allowed), call, name)
        a = call.args
        # a net argument must be a conditioner net before any shape rule asks it for its I/O
        net_arg = getattr(a, "net", None)
        if isinstance(net_arg, OpCall) and net_arg.definition.role != NET:
            self._fail(_not_a_net(net_arg), net_arg, f"{name} / net: {net_arg.op}")
        shape_out = self._shape(lambda: op.out_shape(a, cur.shape, env), call, name)
        if any(s <= 0 for s in shape_out):
            self._fail(f"output shape {fmt(shape_out)} has an empty side", call, name)
        params = self._shape(lambda: op.params(a, cur.shape, env), call, name)
        macs = self._shape(lambda: op.macs(a, cur.shape, env), call, name)
        nid = self._add(nid or S.step_id(chain, self._order, call.op), label=name, op=call.op, call=call,
                        role=op.role, chain=chain, group=group, unit=unit, shape_in=cur.shape, shape_out=shape_out,
                        params=params, macs=macs, env=env, loc=call.loc, reads=())
        self._edge(cur.node, nid, DATA, cur.shape, port=cur.port)
        nets = self._shape(lambda: op.nets(a, cur.shape, env), call, name)
        own_params = params
        late = dict(block=block)  # what the record learns once its nets are counted
        for slot, (net_call, io) in nets.items():
            net = net_call.definition
            nname = f"{name} / {slot}: {net_call.op}"
            if net.role != NET:
                self._fail(_not_a_net(net_call), net_call, nname)
            self._shape(lambda: net.check_io(net_call.args, io), net_call, nname)
            np_ = self._shape(lambda: net.net_params(net_call.args, io), net_call, nname)
            nm = self._shape(lambda: net.net_macs(net_call.args, io), net_call, nname)
            own_params -= np_
            macs -= nm
            out_shape = (io.c_out, io.h, io.w) if io.h else (io.c_out,)
            in_shape = (io.c_in, io.h, io.w) if io.h else (io.c_in,)
            kid = self._add(S.net_id(nid, slot), label=nname, op=net_call.op, call=net_call, role=CONDITIONER,
                            chain=chain, group=group, unit=unit, shape_in=in_shape, shape_out=out_shape,
                            params=np_, macs=nm, io=io, owner=nid, slot=slot, loc=net_call.loc)
            if op.role == AUGMENT and reads is not None:
                late["reads"] = tuple(r.node for r in reads)
                for r in reads:
                    self._edge(r.node, kid, CONDITION, r.shape, port=r.port,
                               part=Read(r.node, r.port, Region.whole(r.shape)))
            else:
                self._edge(cur.node, kid, CONDITION, in_shape, port=cur.port,
                           part=Read(cur.node, cur.port, op.reads(a, cur.shape)))
            cond = self._condition_width(op, a)
            if io.context > cond and env.context is not None and self._context_node is not None and op.role != AUGMENT:
                self._edge(self._context_node, kid, S.CONTEXT, env.context)
            if cond:
                self._edge(S.LABEL, kid, S.CONTEXT, (cond,))
            self._edge(kid, nid, PARAMS, out_shape)
        S.update_node(self.g, nid, params=own_params, macs=macs, params_total=params, **late)
        for slot, (q, target, qgroup) in self._shape(lambda: op.qnets(a, cur.shape, env), call, name).items():
            parts = self.qflow(q, target, cur, qgroup)
            self._edge(parts.last, nid, SAMPLE, target, slot=slot, q=parts)
        if op.role == AUGMENT:
            S.update_node(self.g, nid, added=self._shape(lambda: op.dims_added(a, cur.shape, env), call, name))
        out = _Cursor(nid, shape_out)
        if op.role == DROP:
            dropped = numel(cur.shape) - numel(shape_out)
            pid = self._add(S.factored_prior_id(nid), label=f"{name} / dropped", op=op.dropped_density(a),
                            role=PRIOR, chain=chain, group=group, unit=unit, shape_in=(dropped,),
                            shape_out=(dropped,), dims=dropped, density=FACTORED)
            self._edge(nid, pid, DATA, (dropped,), port=DROPPED)
            S.update_node(self.g, nid, dropped=dropped)
            out.port = KEPT
        return out

    _context_node: str | None = None
    _work: int = 0

    # ------------------------------------------------------------------ the condition
    def _conditioned(self, env: OpEnv) -> OpEnv:
        """``env`` with the spec's condition widths (what conditioned nets and densities read)."""
        c = self.spec.condition
        return env if c is None else replace(env, condition=c.net_width, condition_in=c.width)

    def _condition_width(self, op, a) -> int:
        """Channels of the condition a step's nets read (0 when it reads none)."""
        c = self.spec.condition
        return c.net_width if c is not None and op.role != PRIOR and op.reads_condition(a) else 0

    def _condition_node(self) -> None:
        """The condition y as an input node: its shared embedding's parameters are its own."""
        c = self.spec.condition
        if c is None:
            return
        kind = f"label of {c.classes} classes" if c.classes is not None else f"context vector of {c.vector}"
        self._add(S.LABEL, label=f"condition y: {kind}" + (f", embedded in {c.embed}" if c.embed else ""),
                  op=S.LABEL, role=S.LABEL, chain=S.LABEL, group="condition", unit="condition",
                  shape_in=(c.width,), shape_out=(c.net_width,), params=c.embed_params,
                  macs=c.embed_params if c.vector is not None else 0)

    def _density(self, nid: str, call: OpCall, shape: Shape, label: str, **fields) -> str:
        """A density node (the model's prior, a q's base), with its edge from the condition when it reads it."""
        op = call.definition
        env = self._conditioned(OpEnv())
        nid = self._add(nid, label=f"{label}: {call.op}", op=call.op, call=call, role=PRIOR, shape_in=shape,
                        shape_out=shape, params=self._shape(lambda: op.params(call.args, shape, env), call, label),
                        macs=self._shape(lambda: op.macs(call.args, shape, env), call, label),
                        dims=numel(shape), loc=call.loc, env=env, **fields)
        if self.spec.condition is not None and op.reads_condition(call.args):
            self._edge(S.LABEL, nid, S.CONTEXT, (self.spec.condition.width,))
        return nid

    # ------------------------------------------------------------------ q-networks
    def qflow(self, q: QFlow, target: Shape, given: _Cursor, group: str) -> QParts:
        """Build q-network ``q`` producing a sample of shape ``target``, conditioned on ``given``;
        returns its parts as node ids: ``context`` (or None), ``base``, ``flow`` (in order)."""
        chain = S.q_chain(q.name)
        label = f"q {q.name}"
        # the flow is written noise -> sample; infer the noise shape backwards
        shape = target
        for call in reversed(q.flow):
            op = call.definition
            if op.role != BIJECTION:
                self._fail(_misplaced(call.op, op.role, (BIJECTION,)), call, f"{label}: {call.op}")
            shape = self._shape(lambda: op.in_shape(call.args, shape, OpEnv()), call, f"{label}: {call.op}")
        ctx_shape = cid = None
        saved = self._context_node
        self._context_node = None
        if q.context is not None:
            c = q.context
            cop = c.definition
            if cop.role != CONTEXT:
                self._fail(_misplaced(c.op, cop.role, (CONTEXT,)), c, f"{label} context")
            ctx_shape = self._shape(lambda: cop.out_shape(c.args, given.shape, OpEnv()), c, f"{label} context")
            cid = self._add(S.q_part_id(chain, "context"), label=f"{label} / context: {c.op}", op=c.op, call=c, role=CONTEXT,
                            chain=chain, group=group, unit=label, shape_in=given.shape, shape_out=ctx_shape,
                            params=self._shape(lambda: cop.params(c.args, given.shape, OpEnv()), c,
                                               f"{label} context"),
                            macs=self._shape(lambda: cop.macs(c.args, given.shape, OpEnv()), c, f"{label} context"),
                            loc=c.loc, bits=given.bits)
            self._edge(given.node, cid, CONDITION, given.shape, port=given.port,
                       part=Read(given.node, given.port, Region.whole(given.shape)))
            self._context_node = cid
        base = q.base
        bop = base.definition
        if bop.role != PRIOR:
            self._fail(_misplaced(base.op, bop.role, (PRIOR,)), base, f"{label} base")
        bid = self._density(S.q_part_id(chain, "base"), base, shape, f"{label} / base", chain=chain, group=group,
                            unit=label, density=Q_BASE)
        cur = _Cursor(bid, shape)
        env = OpEnv(context=ctx_shape)
        flow = []
        for i, call in enumerate(q.flow):
            cur = self.op(call, cur, f"{label}, step {i + 1}", chain, group, label, env, allowed=(BIJECTION,))
            flow.append(cur.node)
        self._context_node = saved
        if cur.shape != target:  # pragma: no cover - guaranteed by the backward inference
            self._fail(f"q '{q.name}' produces {fmt(cur.shape)} but {fmt(target)} is needed", None, label)
        return QParts(context=cid, base=bid, flow=tuple(flow))

    # ------------------------------------------------------------------ the model
    def build(self) -> nx.DiGraph:
        spec = self.spec
        g = self.g
        info = GraphInfo(name=spec.name, file=spec.file, data_shape=spec.data.shape, bits=spec.data.bits)
        S.set_graph_info(g, info)
        try:
            self._build_main()
        except BuildStop:
            pass  # complete stays False
        else:
            S.set_graph_info(g, replace(info, complete=True))
        return g

    def _build_main(self) -> None:
        spec = self.spec
        shape = tuple(spec.data.shape)
        iid = self._add(INPUT, label="input x", op=INPUT, role=INPUT, chain=MODEL, group="flow", unit=INPUT,
                        shape_in=shape, shape_out=shape)
        cur = _Cursor(iid, shape, bits=spec.data.bits)
        self._condition_node()
        dq = spec.dequantize
        if dq is not None and spec.data.bits is None:
            self._fail("dequantization needs integer data: give data a 'bits' setting", dq, "dequantize")
        if dq is not None and dq.definition.role != DEQUANTIZER:
            self._fail(_misplaced(dq.op, dq.definition.role, (DEQUANTIZER,)), dq, "dequantize")
        if dq is None and spec.data.bits is not None:
            dq = default_dequantizer()
        if dq is not None:
            cur = self.op(dq, cur, "dequantize", MODEL, "dequantizer", "dequantize", OpEnv(bits=spec.data.bits),
                          allowed=(DEQUANTIZER,), nid=DEQUANTIZE_ID)
            for i, call in enumerate(getattr(dq.args, "then", ())):
                cur = self.op(call, cur, f"dequantize, then {i + 1}", MODEL, "flow", "dequantize",
                              allowed=(BIJECTION,))
        aug = spec.augment
        if aug is not None:
            op = aug.definition
            if op.role != AUGMENT or op.site != AUGMENT_AT_INPUT:
                self._fail(f"'augment:' takes {_calls(AUGMENT_AT_INPUT)}; {_plain(AUGMENT_AT_BLOCK)} belongs in a block",
                           aug, "augment")
            cur = self.op(aug, cur, "augment", MODEL, "flow", "augment", allowed=(AUGMENT,), nid=AUGMENT_ID)
        blocks = 0
        for i, call in enumerate(spec.stages):
            if call.definition.role == COMPOSITE:
                blocks += 1
                cur = self._block(call, cur, blocks)
            else:
                cur = self.op(call, cur, f"stage {i + 1}", MODEL, "flow", f"stage {i + 1}: {call.op}")
        prior = spec.prior
        pop = prior.definition
        if pop.role != PRIOR:
            self._fail(_misplaced(prior.op, pop.role, (PRIOR,)), prior, "prior")
        pid = self._density(PRIOR_ID, prior, cur.shape, "prior", chain=MODEL, group="flow", unit="prior",
                            density=FINAL)
        self._edge(cur.node, pid, DATA, cur.shape, port=cur.port)
        if spec.condition is not None and not any(True for _ in S.out_edges(self.g, S.LABEL)):
            self.diag.warn("the spec declares a condition but nothing reads it: give a coupling `condition: true` "
                           "or use `prior: class_normal`", None)

    def _block(self, call: OpCall, cur: _Cursor, b: int) -> _Cursor:
        a = call.args
        # refuse `units: 1000000` before building it: ops, plus the cross-unit reads (quadratic in units)
        work = a.units * (len(a.modules) + (a.augment is not None))
        if a.augment is not None:
            work += a.units * (a.units - 1) // 2
        self._work += work
        if self._work > MAX_EXPANSION:
            self._fail(f"{a.units:,} units of {len(a.modules)} op(s) each expand to {work:,} ops and "
                       f"connections; a spec may expand to at most {MAX_EXPANSION:,}", call, f"block {b}")
        block_in = cur
        outs: list[_Cursor] = []
        for u in range(a.units):
            unit = f"block {b}, unit {u + 1}"
            for m, mcall in enumerate(a.modules):
                cur = self.op(mcall, cur, f"{unit}, module {m + 1}", MODEL, "flow", unit, block=(b, u + 1))
            if u < a.units - 1 and a.augment is not None:
                aug = a.augment
                if aug.definition.role != AUGMENT or aug.definition.site != AUGMENT_AT_BLOCK:
                    self._fail(f"a block's augment must be {_calls(AUGMENT_AT_BLOCK)}; got '{aug.op}'", aug, unit)
                reads = [block_in] + outs
                if any(r.shape[1:] != cur.shape[1:] for r in reads):
                    bad = next(r for r in reads if r.shape[1:] != cur.shape[1:])
                    self._fail(f"cross_unit's g reads a {fmt(bad.shape)} tensor but the unit output is "
                               f"{fmt(cur.shape)}: a block must keep its resolution", aug, unit)
                ctx = (sum(r.shape[0] for r in reads), *cur.shape[1:])
                env = OpEnv(context=ctx)
                outs.append(cur)
                cur = self.op(aug, cur, f"{unit}, cross-unit coupling", MODEL, "flow", unit, env,
                              allowed=(AUGMENT,), reads=reads, block=(b, u + 1))
            else:
                outs.append(cur)
        return cur


def _not_a_net(net_call: OpCall) -> str:
    role = net_call.definition.role
    return (f"'{net_call.op}' is {_ROLE_WORDS.get(role, role)}, not a conditioner net; nets are: "
            + ", ".join(names(NET)))


_ROLE_WORDS = {
    BIJECTION: "a flow layer", DROP: "a drop (factor-out)", AUGMENT: "an augment point", NET: "a coupling net",
    CONTEXT: "a context net", PRIOR: "a prior", DEQUANTIZER: "a dequantizer", COMPOSITE: "a block",
}


def _misplaced(name: str, role: str, allowed) -> str:
    want = " or ".join(_ROLE_WORDS.get(r, r) for r in allowed)
    hint = {
        NET: f"; use it as the net of a coupling, e.g. affine_coupling(net: {name}(...))",
        PRIOR: "; use it as 'prior:' or a q-network's 'base:'",
        DEQUANTIZER: "; use it as 'dequantize:'",
        CONTEXT: "; use it as a q-network's 'context:'",
        COMPOSITE: "; blocks stand only in 'stages'",
        AUGMENT: f"; {_calls(AUGMENT_AT_INPUT)} goes in 'augment:', {_calls(AUGMENT_AT_BLOCK)} in a block's 'augment:'",
    }.get(role, "")
    return f"'{name}' is {_ROLE_WORDS.get(role, role)}, but {want} is needed here{hint}"


def _site_ops(site: str) -> list[str]:
    return sorted(n for n, op in REGISTRY.items() if op.role == AUGMENT and op.site == site)


def _calls(site: str) -> str:
    """The augment ops that stand at ``site``, as calls: "input(...)" (read off the registry)."""
    return " or ".join(f"{n}(...)" for n in _site_ops(site)) or "no augment op"


def _plain(site: str) -> str:
    return ", ".join(_site_ops(site)) or "no augment op"


def build(spec: Spec) -> tuple[nx.DiGraph, Diagnostics]:
    """Build the graph of ``spec``; shape errors are collected in the returned Diagnostics."""
    b = Builder(spec)
    g = b.build()
    return g, b.diag


def step_path(g: nx.DiGraph, source: str = INPUT) -> list[str]:
    """The steps of the model chain in execution order: the path of data edges from ``source``
    (not included), following each drop's kept output, down to the prior."""
    path, n = [], source
    while True:
        nxt = [v for v, e in S.out_edges(g, n, DATA) if e.port != DROPPED]
        if not nxt:
            return path
        n = nxt[0]
        path.append(n)


def data_chain(g: nx.DiGraph, chain: str) -> list[str]:
    """The nodes of ``chain`` that transform data, in execution order."""
    return [n for n, d in S.nodes(g) if d.chain == chain and not d.is_net]


__all__ = ["build", "Builder", "data_chain", "step_path", "SpecError", "Loc"]
