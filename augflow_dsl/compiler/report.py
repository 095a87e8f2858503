"""What ``augflow-dsl compile`` reports of a checked spec (:func:`augflow_dsl.graph.pipeline.analyze`):
the built module, the seconds it took, its size per unit."""
from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class CompileReport:
    """The compiled module, the seconds it took, and one row per unit:
    (unit, layers, shape out, params, MACs)."""
    model: object
    seconds: float
    parameters: int
    rows: list[tuple[str, int, tuple[int, ...], int, int]] = field(default_factory=list)


def compile_report(spec, g, report) -> CompileReport:
    """Build the module of a checked spec and count its parameters (torch is imported here)."""
    from ..graph.check import units
    from .model import build_model

    t = time.perf_counter()
    model = build_model(spec, g)  # an allocation failure is a SpecError naming the size
    seconds = time.perf_counter() - t
    numel = sum(p.numel() for p in model.parameters())
    rows = [(u.unit, u.ops, tuple(u.shape_out), u.params, u.macs) for u in units(report)]
    return CompileReport(model, seconds, numel, rows)


__all__ = ["CompileReport", "compile_report"]
