"""The graph's schema: typed, frozen records for its nodes, edges and the graph itself, the
edge kinds and ports, and the node-id conventions. Every reader of the graph goes through here;
no other module reads a node or edge attribute by a string key.

A graph (``networkx.DiGraph``) holds one :class:`NodeInfo` per node (under the attribute
:data:`INFO`), one :class:`EdgeInfo` per edge (same key) and one :class:`GraphInfo` in
``g.graph[INFO]``. The builder (:mod:`.builder`) is the only writer.

Edges carry a tensor of ``shape`` and one of five kinds:

* :data:`DATA`: the tensor the flow transforms; ``port`` tells a drop's :data:`KEPT` /
  :data:`DROPPED` outputs from a plain :data:`OUT`;
* :data:`CONDITION`: a conditioner net (or a q's context net) reads it; ``part`` is the
  :class:`~augflow_dsl.ops.regions.Read` (node, port, region) the audit compares with what
  the reader's owner leaves unchanged;
* :data:`PARAMS`: a conditioner's output, the parameters of a coupling or augment point;
* :data:`CONTEXT`: a q-network's context net feeds a conditioner, or the condition node (:data:`LABEL`,
  the spec's ``condition:`` y with its embedding) feeds a conditioned net or a conditional density;
* :data:`SAMPLE`: a q-network hands its sample to a dequantizer or augment point; ``slot`` is
  the op's q slot and ``q`` the q-network's parts (:class:`QParts`).

Records are frozen: a change is a new record (:func:`update_node`, :func:`update_edge`). What a
pass derives from the graph is that pass's result, not an attribute: the supports the audit
propagates are :class:`augflow_dsl.graph.support_audit.Supports`, by node id.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import networkx as nx

from ..errors import Loc
from ..ops.registry import CONTEXT as _CONTEXT_ROLE
from ..ops.registry import PRIOR, NetIO, OpCall, OpEnv, Shape

INFO = "info"  # the attribute key under which nodes, edges and the graph keep their record

# ---------------------------------------------------------------------------- roles the graph adds
INPUT = "input"              # the data x (node id, op and role)
CONDITIONER = "conditioner"  # a coupling's or augment point's net (the op roles are in ops.registry)
LABEL = "condition"          # the spec's condition y (a label or a context vector): node id, op, role and chain

# ---------------------------------------------------------------------------- edge kinds and ports
DATA = "data"
CONDITION = "condition"
PARAMS = "params"
CONTEXT = "context"
SAMPLE = "sample"
EDGE_KINDS = (DATA, CONDITION, PARAMS, CONTEXT, SAMPLE)

OUT = "out"          # a step's one output
KEPT = "kept"        # a drop's kept output (the data path goes on)
DROPPED = "dropped"  # a drop's dropped output (to its density)

# ---------------------------------------------------------------------------- densities
FINAL = "final"      # the model's prior at the end of the chain
FACTORED = "dropped"  # the density of a drop's dropped part
Q_BASE = "q_base"    # a q-network's base distribution

# ---------------------------------------------------------------------------- chains and node ids
MODEL = "p"             # the model's chain
PRIOR_ID = "p/prior"    # the model's prior node
DEQUANTIZE_ID = "p/dequantize"
AUGMENT_ID = "p/augment"
_Q = "q:"


def q_chain(name: str) -> str:
    """The chain id of q-network ``name``."""
    return f"{_Q}{name}"


def is_q_chain(chain: str) -> bool:
    return chain.startswith(_Q)


def q_name(chain: str) -> str:
    """The q-network name of a q chain id."""
    if not is_q_chain(chain):
        raise ValueError(f"{chain!r} is not a q-network chain")
    return chain[len(_Q):]


def step_id(chain: str, order: int, op: str) -> str:
    return f"{chain}/{order:04d} {op}"


def net_id(owner: str, slot: str) -> str:
    """The id of ``owner``'s conditioner net in ``slot``."""
    return f"{owner}/{slot}"


def factored_prior_id(drop: str) -> str:
    """The id of the density that scores drop ``drop``'s dropped part."""
    return f"{drop}/prior"


def q_part_id(chain: str, part: str) -> str:
    """The id of a q-network's ``context`` or ``base`` node."""
    return f"{chain}/{part}"


# ---------------------------------------------------------------------------- records
@dataclass(frozen=True)
class NodeInfo:
    """One node: a step of a chain, a conditioner net, a q-network's context or base, a density,
    or the input. ``params`` / ``macs`` are the node's own (a step's exclude its nets', which
    ``params_total`` includes)."""

    label: str
    op: str
    role: str
    chain: str
    group: str               # parameter group: flow, q or dequantizer
    unit: str                # the unit (or stage, or q-network) the node belongs to, for reports
    shape_in: Shape
    shape_out: Shape
    order: int = 0           # insertion order: execution order within a chain
    call: OpCall | None = None
    loc: Loc | None = None
    params: int = 0
    macs: int = 0
    params_total: int = 0    # a step's parameters with its nets'
    env: OpEnv | None = None  # what a step's layer is built with
    reads: tuple[str, ...] = ()  # the earlier nodes whose outputs a step's context reads (cross-unit g)
    block: tuple[int, int] | None = None  # (block, unit) of a step inside a block
    added: int = 0           # dims an augment point adds
    dropped: int = 0         # dims a drop hands to its density
    dims: int = 0            # dims a density scores
    density: str | None = None  # FINAL, FACTORED or Q_BASE for a density node
    io: NetIO | None = None  # a conditioner's input / output sizes
    owner: str | None = None  # a conditioner's step
    slot: str | None = None   # a conditioner's slot in its step
    bits: int | None = None   # a q context's bit depth of the integer data it reads

    @property
    def is_net(self) -> bool:
        """A conditioner net or a q's context net: it reads tensors but transforms none."""
        return self.role in (CONDITIONER, _CONTEXT_ROLE)

    @property
    def is_density(self) -> bool:
        return self.role == PRIOR


@dataclass(frozen=True)
class QParts:
    """A q-network's parts, as node ids: ``context`` (or None), ``base``, ``flow`` in order."""

    context: str | None
    base: str
    flow: tuple[str, ...]

    @property
    def last(self) -> str:
        """The node whose output is the q's sample."""
        return self.flow[-1] if self.flow else self.base


@dataclass(frozen=True)
class EdgeInfo:
    kind: str
    shape: Shape
    port: str = OUT
    part: Any = None          # CONDITION: the Read the audit checks
    slot: str | None = None   # SAMPLE: the op's q slot
    q: QParts | None = None   # SAMPLE: the q-network's parts


@dataclass(frozen=True)
class GraphInfo:
    name: str
    file: str
    data_shape: Shape
    bits: int | None
    complete: bool = False  # False when a shape error stopped the build


# ---------------------------------------------------------------------------- readers
def graph_info(g: nx.DiGraph) -> GraphInfo:
    return g.graph[INFO]


def node(g: nx.DiGraph, n: str) -> NodeInfo:
    return g.nodes[n][INFO]


def edge(g: nx.DiGraph, u: str, v: str) -> EdgeInfo:
    return g.edges[u, v][INFO]


def nodes(g: nx.DiGraph) -> list[tuple[str, NodeInfo]]:
    """Every node with its record, in insertion (execution) order."""
    return sorted(((n, d[INFO]) for n, d in g.nodes(data=True)), key=lambda kv: kv[1].order)


def in_edges(g: nx.DiGraph, n: str, *kinds: str) -> Iterator[tuple[str, EdgeInfo]]:
    """(source, record) of ``n``'s in-edges, of ``kinds`` only when given."""
    for u, d in g.pred[n].items():  # what g.in_edges(n, data=True) walks, without building a view
        e = d[INFO]
        if not kinds or e.kind in kinds:
            yield u, e


def out_edges(g: nx.DiGraph, n: str, *kinds: str) -> Iterator[tuple[str, EdgeInfo]]:
    """(target, record) of ``n``'s out-edges, of ``kinds`` only when given."""
    for v, d in g.succ[n].items():
        e = d[INFO]
        if not kinds or e.kind in kinds:
            yield v, e


def nets_of(g: nx.DiGraph, n: str) -> list[tuple[str, NodeInfo]]:
    """Step ``n``'s conditioner nets (the sources of its PARAMS edges), by insertion order."""
    return sorted(((u, node(g, u)) for u, _ in in_edges(g, n, PARAMS)), key=lambda kv: kv[1].order)


# ---------------------------------------------------------------------------- the one writer's helpers
def add_node(g: nx.DiGraph, n: str, info: NodeInfo) -> None:
    g.add_node(n, **{INFO: info})


def update_node(g: nx.DiGraph, n: str, **changes) -> NodeInfo:
    """Replace node ``n``'s record by a copy with ``changes`` (records are frozen)."""
    info = replace(node(g, n), **changes)
    g.nodes[n][INFO] = info
    return info


def add_edge(g: nx.DiGraph, u: str, v: str, info: EdgeInfo) -> None:
    g.add_edge(u, v, **{INFO: info})


def update_edge(g: nx.DiGraph, u: str, v: str, **changes) -> EdgeInfo:
    """Replace edge ``(u, v)``'s record by a copy with ``changes`` (a hand-edited graph, tests)."""
    info = replace(edge(g, u, v), **changes)
    g.edges[u, v][INFO] = info
    return info


def set_graph_info(g: nx.DiGraph, info: GraphInfo) -> None:
    g.graph[INFO] = info
