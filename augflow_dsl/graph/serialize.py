"""Export the graph: GraphML (networkx's writer) or Graphviz dot, with scalar attributes only."""
from __future__ import annotations

import io

import networkx as nx

from . import schema as S

_KEEP = ("label", "op", "role", "chain", "group", "unit", "params", "macs", "order")


def plain(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``g`` whose attributes are strings and numbers (what file formats take): each
    record flattened to the attributes the exports have always had."""
    h = nx.DiGraph(name=S.graph_info(g).name)
    for n, d in g.nodes(data=True):
        info = d[S.INFO]
        attrs = {k: getattr(info, k) for k in _KEEP}
        attrs["shape_in"] = "x".join(map(str, info.shape_in))
        attrs["shape_out"] = "x".join(map(str, info.shape_out))
        if info.reads:
            attrs["reads"] = " ".join(info.reads)  # the node ids a step's context reads
        if info.call is not None:
            attrs["args"] = ", ".join(f"{k}={_scalar(v)}" for k, v in info.call.args.model_dump().items()
                                      if not isinstance(v, (dict, list, tuple)) or k == "shape")
        h.add_node(n, **attrs)
    for u, v, e in g.edges(data=True):
        info = e[S.INFO]
        h.add_edge(u, v, kind=info.kind, shape="x".join(map(str, info.shape)),
                   part="" if info.part is None else str(info.part))
    return h


def _scalar(v):
    return v if isinstance(v, (int, float, str, bool)) else type(v).__name__


def to_dot(g: nx.DiGraph) -> str:
    """``g`` flattened by :func:`plain` (its attributes are the export's) as Graphviz dot text."""

    def q(s: str) -> str:
        return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'

    styles = {S.DATA: "solid", S.CONDITION: "dashed", S.PARAMS: "bold", S.CONTEXT: "dotted", S.SAMPLE: "solid"}
    out = [f"digraph {q(g.graph.get('name', 'flow'))} {{", "  rankdir=TB; node [shape=box, fontsize=10];"]
    for n, d in g.nodes(data=True):
        label = f"{d.get('label', n)}\\n{d.get('shape_in', '')} -> {d.get('shape_out', '')}\\n{d.get('params', 0):,} params"
        out.append(f"  {q(n)} [label={q(label)}];".replace("\\\\n", "\\n"))
    for u, v, e in g.edges(data=True):
        out.append(f"  {q(u)} -> {q(v)} [label={q(e.get('shape', ''))}, style={styles.get(e.get('kind'), 'solid')}];")
    out.append("}")
    return "\n".join(out) + "\n"


def export(g: nx.DiGraph, fmt: str = "graphml") -> str:
    """The built graph ``g`` as GraphML or dot text."""
    h = plain(g)
    if fmt == "dot":
        return to_dot(h)
    buf = io.BytesIO()
    nx.write_graphml(h, buf)
    return buf.getvalue().decode("utf-8")
