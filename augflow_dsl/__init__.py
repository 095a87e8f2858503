"""augflow-dsl: a declarative compiler for augmented normalizing flows.

    import augflow_dsl as af
    spec = af.load("specs/flowpp.flow", overrides={"filters": 32})
    report = af.check(spec)            # graph + audit, no torch
    model = af.compile(spec)           # torch.nn.Module
"""
from __future__ import annotations

from .errors import SpecError
from .language import Spec, load, loads

__all__ = ["SpecError", "Spec", "load", "loads", "check", "build_graph", "compile", "load_model"]
__version__ = "0.1.0"


def check(spec, overrides=None):
    """Build the graph of ``spec`` (a Spec or a path) and audit it; returns a CheckReport (never
    raises for a bad spec)."""
    from .graph.pipeline import analyze
    return analyze(spec, overrides).report


def build_graph(spec, overrides=None):
    """(graph, diagnostics) of ``spec`` (a Spec or a path): the graph alone, not checked; raises
    the loader's SpecError for a spec that does not load."""
    from .graph.builder import build
    if not isinstance(spec, Spec):
        spec = load(spec, overrides)
    return build(spec)


def compile(spec, overrides=None):  # noqa: A001 - the public name DESIGN.md gives
    """Compile ``spec`` (a Spec or a path) to a :class:`~augflow_dsl.compiler.model.FlowModel`."""
    from .compiler.model import compile_spec
    return compile_spec(spec, overrides)


def load_model(run_or_ckpt, *, ema: bool = True, map_location="cpu"):
    """(model, spec, meta) from a run folder or an augflow-dsl checkpoint (trained, compiled or
    imported: the one model file format, any version); see :func:`augflow_dsl.compiler.model_file.load_model`."""
    from .compiler.model_file import load_model as _load_model
    return _load_model(run_or_ckpt, ema=ema, map_location=map_location)
