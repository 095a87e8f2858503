"""Export the graph: GraphML (networkx's writer) or Graphviz dot, with scalar attributes only."""
from __future__ import annotations

import io

import networkx as nx

_KEEP = ("label", "op", "role", "chain", "group", "unit", "params", "macs", "order")


def plain(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``g`` whose attributes are strings and numbers (what file formats take)."""
    h = nx.DiGraph(name=g.graph.get("name", ""))
    for n, d in g.nodes(data=True):
        attrs = {k: d[k] for k in _KEEP if k in d}
        attrs["shape_in"] = "x".join(map(str, d.get("shape_in", ())))
        attrs["shape_out"] = "x".join(map(str, d.get("shape_out", ())))
        if d.get("reads"):
            attrs["reads"] = " ".join(d["reads"])  # the node ids a step's context reads
        if d.get("call") is not None:
            attrs["args"] = ", ".join(f"{k}={_scalar(v)}" for k, v in d["call"].args.model_dump().items()
                                      if not isinstance(v, (dict, list, tuple)) or k == "shape")
        h.add_node(n, **attrs)
    for u, v, e in g.edges(data=True):
        h.add_edge(u, v, kind=e["kind"], shape="x".join(map(str, e.get("shape", ()))), part=str(e.get("part", "")))
    return h


def _scalar(v):
    return v if isinstance(v, (int, float, str, bool)) else type(v).__name__


def to_dot(g: nx.DiGraph) -> str:
    def q(s: str) -> str:
        return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'

    styles = {"data": "solid", "condition": "dashed", "params": "bold", "context": "dotted", "sample": "solid"}
    out = [f"digraph {q(g.graph.get('name', 'flow'))} {{", "  rankdir=TB; node [shape=box, fontsize=10];"]
    for n, d in g.nodes(data=True):
        label = f"{d.get('label', n)}\\n{d.get('shape_in', '')} -> {d.get('shape_out', '')}\\n{d.get('params', 0):,} params"
        out.append(f"  {q(n)} [label={q(label)}];".replace("\\\\n", "\\n"))
    for u, v, e in g.edges(data=True):
        out.append(f"  {q(u)} -> {q(v)} [label={q(e.get('shape', ''))}, style={styles.get(e['kind'], 'solid')}];")
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
