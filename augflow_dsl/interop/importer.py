"""Import an authors' checkpoint into a compiled spec and write it as an augflow-dsl checkpoint.

The result is read by ``af.load_model`` (and so by eval / sample) like any trained run: the
spec text (for DenseFlow with the reference's attention token layout set), the imported weights
as ``model``, the EMA weights as ``ema`` where the checkpoint has them, step 0, no optimizer.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..compiler.model import FlowModel, compile_spec
from ..language.evaluate import parse_override
from ..language.load import load, loads
from ..language.models import Spec
from . import denseflow, vflow
from .mapping import ImportMismatch, check, fill

KINDS = ("denseflow", "vflow")


@dataclass
class Imported:
    kind: str
    source: str
    spec: Spec
    overrides: dict[str, Any]
    model: FlowModel  # on the meta device
    state: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    tensors: int  # reference tensors read (per copy: model, and EMA when present)


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _overrides(sets: list[str] | dict | None) -> dict[str, Any]:
    if not sets:
        return {}
    return dict(sets) if isinstance(sets, dict) else dict(parse_override(s) for s in sets)


def import_checkpoint(kind: str, source: str | Path, spec_path: str | Path, sets=None, *,
                      trust_pickle: bool = False) -> Imported:
    """Read ``source`` (a DenseFlow .pt file or a VFlow TF checkpoint prefix / folder), check it
    against the spec name by name and shape by shape, and return our state dict (and the EMA's)
    with the spec's model on the meta device (its structure; ``af.load_model`` builds it). Raises
    ImportMismatch (checkpoint side) or SpecError (spec side) with a message for the user."""
    if kind not in KINDS:
        raise ImportMismatch(f"unknown checkpoint kind {kind!r}; one of {', '.join(KINDS)}")
    overrides = _overrides(sets)
    spec = load(spec_path, overrides)
    # the checkpoint first: an unreadable file is refused before anything is built
    source_ckpt = (denseflow.read_checkpoint(source, trust_pickle) if kind == "denseflow"
                   else vflow.TFCheckpoint(source))
    if kind == "denseflow":
        spec = loads(denseflow.reference_spec_text(spec.text), spec.file, overrides)
    with torch.device("meta"):  # names, shapes and dtypes only: the values come from the checkpoint
        model = compile_spec(spec)
    ours = _shapes(model)
    if kind == "denseflow":
        sd = source_ckpt
        wmap = denseflow.weight_map_for(model)
        check(wmap, {k: tuple(v.shape) for k, v in sd.items()}, ours, "DenseFlow")
        state, ema = fill(wmap, sd.__getitem__, model), None
        n = len(wmap.reference_shapes())
    else:
        ckpt = source_ckpt
        wmap = vflow.weight_map_for(model)
        check(wmap, ckpt.shapes, ours, "VFlow")
        shadows = vflow.ema_shapes(ckpt.shapes)
        if shadows is not None:
            check(wmap, shadows, ours, "VFlow checkpoint's EMA (ExponentialMovingAverage): the")
        state = fill(wmap, ckpt.read, model)
        ema = fill(wmap, lambda k: ckpt.read(k + vflow.EMA), model) if shadows is not None else None
        n = len(wmap.reference_shapes()) * (2 if ema is not None else 1)
    return Imported(kind, str(source), spec, overrides, model, state, ema, n)


def save_imported(imp: Imported, out: str | Path) -> None:
    """Write ``imp`` as an augflow-dsl model file of kind "imported" (compiler/model_file.py)."""
    from ..compiler.model_file import save_imported as write

    ema = None
    if imp.ema is not None:  # the layout of torch.optim.swa_utils.AveragedModel, as training writes it
        ema = {f"module.{k}": v for k, v in imp.ema.items()}
        ema["n_averaged"] = torch.tensor(1, dtype=torch.long)
    write(out, imp.spec, imp.overrides, imp.state, ema,
          imported={"kind": imp.kind, "from": imp.source, "tensors": imp.tensors})
