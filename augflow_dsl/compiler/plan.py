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

from ..graph.builder import INPUT, step_path
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
    mods = {slot: net.definition.layer_class().from_op(net.args, io) for slot, (net, io) in nets.items()}
    mods.update(built or {})
    return call.definition.layer_class().from_op(call.args, tuple(shape), env, mods)


def layer_for(call, shape, env=None) -> nn.Module:
    """One op's layer outside a graph, its nets sized by the op's own rules (tests, tools)."""
    env = env or OpEnv()
    return build_layer(call, shape, env, call.definition.nets(call.args, tuple(shape), env))


def node_layer(g: nx.DiGraph, node: str) -> nn.Module:
    """A graph node's layer, its nets and q-networks read off its in-edges (the graph is the IR)."""
    d = g.nodes[node]
    nets, built = {}, {}
    for u, _, e in g.in_edges(node, data=True):
        if e["kind"] == "params":
            nets[g.nodes[u]["slot"]] = (g.nodes[u]["call"], g.nodes[u]["io"])
        elif e["kind"] == "sample":
            built[e["slot"]] = qnet(g, e)
    return build_layer(d["call"], d["shape_in"], d.get("env"), nets, built)


def qnet(g: nx.DiGraph, edge: dict) -> QNet:
    """The q-network whose parts a ``sample`` edge names: context net, base, flow."""
    context = None
    if edge["context"] is not None:
        c = g.nodes[edge["context"]]
        context = c["call"].definition.layer_class().from_op(c["call"].args, tuple(c["shape_in"]), c.get("bits"))
    b = g.nodes[edge["base"]]
    base = b["call"].definition.layer_class().from_op(b["call"].args, tuple(b["shape_in"]), None, {})
    return QNet(context, base, Chain([node_layer(g, n) for n in edge["flow"]]))


def compile_plan(g: nx.DiGraph) -> list[PlanStep]:
    """The model chain as plan records, in execution order (the prior last)."""
    nodes = step_path(g, INPUT)
    slot = {INPUT: 0} | {n: i + 1 for i, n in enumerate(nodes)}
    reads = [tuple(slot[r] for r in g.nodes[n].get("reads", ())) for n in nodes]
    saved = {j for r in reads for j in r}
    return [PlanStep(node_layer(g, n), r, i + 1 in saved) for i, (n, r) in enumerate(zip(nodes, reads))]
