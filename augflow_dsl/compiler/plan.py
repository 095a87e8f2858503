"""Graph -> flat plan: one layer per step of the model chain, with what its context reads.

Compiled once, read by :class:`~augflow_dsl.compiler.model.FlowModel`'s two loops. Every step
is built by its op's layer class (``from_op(args, shape, env, nets)``), ``nets`` holding what
the graph says it owns: its conditioner nets (``params`` edges, by slot) and its q-networks
(``sample`` edges, by slot, assembled from the node ids on the edge). Nothing here routes on a
role, an op name or a label.
"""
from __future__ import annotations

from typing import NamedTuple

import networkx as nx
from torch import nn

from ..graph import schema as S
from ..graph.builder import step_path
from ..graph.schema import INPUT, PARAMS, SAMPLE, EdgeInfo
from ..layers import layer_of
from ..layers.qnet import Chain, QNet
from ..ops.registry import OpEnv


class PlanStep(NamedTuple):
    """One record of the plan. ``reads``: slots of the saved outputs the step's context reads,
    concatenated on channels in this order (slot 0 is the plan's input, slot i + 1 the output
    of step i); ``save``: whether a later step reads this step's output."""

    layer: nn.Module
    reads: tuple[int, ...]
    save: bool


def build_layer(call, shape, env, nets: dict, built: dict | None = None) -> nn.Module:
    """The torch layer of ``call`` on ``shape``; ``nets`` maps each conditioner slot to its
    (net call, NetIO); ``built`` adds modules already built (q-networks), by slot."""
    mods = {slot: layer_of(net.definition).from_op(net.args, io) for slot, (net, io) in nets.items()}
    mods.update(built or {})
    return layer_of(call.definition).from_op(call.args, tuple(shape), env, mods)


def layer_for(call, shape, env=None) -> nn.Module:
    """One op's layer outside a graph, its nets sized by the op's own rules (tests, tools)."""
    env = env or OpEnv()
    return build_layer(call, shape, env, call.definition.nets(call.args, tuple(shape), env))


def node_layer(g: nx.DiGraph, node: str) -> nn.Module:
    """A graph node's layer, its nets and q-networks read off its in-edges (the graph is the IR)."""
    d = S.node(g, node)
    nets, built = {}, {}
    for u, e in S.in_edges(g, node, PARAMS, SAMPLE):
        if e.kind == PARAMS:
            net = S.node(g, u)
            nets[net.slot] = (net.call, net.io)
        else:
            built[e.slot] = qnet(g, e)
    layer = build_layer(d.call, d.shape_in, d.env, nets, built)
    if d.call.definition.reads_condition(d.call.args):  # the graph's edge from the condition node
        layer.reads_condition = True
    return layer


def qnet(g: nx.DiGraph, edge: EdgeInfo) -> QNet:
    """The q-network whose parts a ``sample`` edge names (:class:`~augflow_dsl.graph.schema.QParts`):
    context net, base, flow."""
    q = edge.q
    context = None
    if q.context is not None:
        c = S.node(g, q.context)
        context = layer_of(c.call.definition).from_op(c.call.args, tuple(c.shape_in), c.bits)
    b = S.node(g, q.base)
    base = layer_of(b.call.definition).from_op(b.call.args, tuple(b.shape_in), b.env, {})
    return QNet(context, base, Chain([node_layer(g, n) for n in q.flow]))


def compile_plan(g: nx.DiGraph) -> list[PlanStep]:
    """The model chain as plan records, in execution order (the prior last)."""
    nodes = step_path(g, INPUT)
    slot = {INPUT: 0} | {n: i + 1 for i, n in enumerate(nodes)}
    reads = [tuple(slot[r] for r in S.node(g, n).reads) for n in nodes]
    saved = {j for r in reads for j in r}
    return [PlanStep(node_layer(g, n), r, i + 1 in saved) for i, (n, r) in enumerate(zip(nodes, reads))]
