"""Architecture drawings (issue 13, part 4): a picture of a spec that a person reads at a glance,
drawn with matplotlib from the graph (no torch). :mod:`.picture` is the picture as data, :mod:`.layout`
lays a graph out as one, :mod:`.render` draws, fits, checks and saves it. The command (``augflow-dsl
draw SPEC --out arch.svg|png|pdf``) is in :mod:`augflow_dsl.cli.draw`.

Design (issue 13, part 4):

* **One column, data at the top, latent at the bottom** (the normalizing direction): the data box
  (shape, bits, dims), the dequantizer, the input augment point, every stage in order, the prior,
  and a totals footer (parameters by group, MACs, ``data + augmented = scored by priors``). The
  arrow between two boxes carries the tensor's shape and its dims.
* **Beside a box** (a second column): each q-network next to the step it feeds (its context net,
  base, flow steps compressed as ``4 x step (actnorm . conv1x1 ...)``, ops, parameters, MACs);
  each drop's prior with the dims handed to it.
* **Stages:** a run of consecutive plain stages of one shape (VFlow's and Flow++'s step lists) is
  one box with its steps compressed into repeats; a stage that changes the shape or drops dims
  stands alone; a block (a composite stage) is one box holding a grid of its units, each unit a
  small box with its output shape, the dims its augment point adds and its parameters (more than
  :data:`MAX_CELLS` units: the first and last rows, the middle summarised in one cell).
* Colours follow the node roles of the registry (dequantizer, augment, drop, prior, q-network);
  nothing here is keyed on an op's name.
* **Readable by construction, and checked:** fonts are at least 7 pt at 100 %; after layout every
  text is measured with the Agg renderer and shrunk (never below :data:`MIN_FONT`) until it fits
  its box; :func:`layout_problems` lists any text still outside its box or overlapping another
  (the tests demand none for every spec).
* **Formats** from the extension of ``--out``: ``.svg`` (text kept as text, one ``<text>`` element
  per line), ``.png`` (150 dpi), ``.pdf``; anything else is refused (exit 2). Output is
  deterministic: fixed ``svg.hashsalt``, no dates in the metadata, the creator set to augflow-dsl.
* **Exit codes** (of the command): 0 written; 1 the spec does not load or its graph stops at a shape error (nothing
  drawn), or it builds but fails the audit (drawn, errors printed: the picture helps find them);
  2 usage (missing file, unsupported extension, matplotlib missing).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .layout import layout
from .picture import Box, Cell, Picture, Side, compress, sequence
from .render import FORMATS, Drawing, fit, layout_problems, render, save

__all__ = ["FORMATS", "Box", "Cell", "DrawResult", "DrawTrouble", "Drawing", "Picture", "Side", "compress",
           "draw_spec", "fit", "layout", "layout_problems", "render", "save", "sequence"]


class DrawTrouble(Exception):
    """The spec cannot be drawn; ``code`` is the exit status (1: the spec, 2: usage)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


@dataclass
class DrawResult:
    path: Path | None
    drawing: Drawing | None
    picture: Picture
    report: Any            # graph.check.CheckReport


def draw_spec(spec_path: str | Path, out: str | Path | None = None, overrides: list[str] | None = None) -> DrawResult:
    """Draw ``spec_path`` (under ``overrides``, ``"NAME=VALUE"``) to ``out`` (None: lay out only).
    Raises :class:`DrawTrouble` for a bad extension, a missing file, a spec that does not load or
    whose graph stops at a shape error."""
    from ...errors import Source, SpecError
    from ...graph.pipeline import analyze
    from ...graph.schema import graph_info
    from ...language.load import load

    if out is not None and Path(out).suffix.lower() not in FORMATS:
        raise DrawTrouble(f"error: cannot write '{out}': the format comes from the extension, one of "
                          f"{', '.join(FORMATS)}", 2)
    if not Path(spec_path).is_file():
        raise DrawTrouble(f"error: no such spec file: {spec_path}", 2)
    try:
        spec = load(spec_path, overrides or [])
    except (SpecError, ValueError) as e:
        raise DrawTrouble(str(e), 1) from None
    analysis = analyze(spec)
    g = analysis.graph
    if not graph_info(g).complete:
        msgs = "\n".join(str(e.with_source(Source(spec.text, spec.file))) for e in analysis.diagnostics.errors)
        raise DrawTrouble(f"{msgs}\n{spec_path}: the graph stops at this shape error; nothing drawn", 1)
    pic = layout(spec, g, analysis.report)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise DrawTrouble("error: draw needs matplotlib: python -m pip install matplotlib", 2) from None
    drawing = render(pic)
    path = save(drawing, out) if out is not None else None
    return DrawResult(path=path, drawing=drawing, picture=pic, report=analysis.report)
