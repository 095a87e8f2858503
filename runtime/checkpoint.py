"""Checkpoints: written atomically, read with a clear refusal, turned back into a model.

A checkpoint is one ``torch.save`` dict (loaded with ``weights_only=True``: plain containers,
numbers, strings and tensors only, so reading a file never runs code):

``format`` "augflow-dsl-checkpoint", ``version``, ``spec_text``, ``spec_file``, ``spec_hash``,
``overrides`` (the spec's variables overridden at train time), ``model`` (state dict), ``ema``
(the EMA's state dict or None), ``optimizer``, ``step`` (updates done), ``epoch``, ``position``
(global batches done in that epoch), ``rng`` (every generator's state, per rank), ``train`` (the
resolved TrainSpec), ``best_bpd``, ``world_size``, ``versions``.

Writing goes to a temporary file in the same folder, is flushed and fsync'ed, then renamed over
the old file (``os.replace`` is atomic on POSIX) and the folder fsync'ed: a crash or SIGKILL at any
moment leaves either the old checkpoint or the new one, never a torn file.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

FORMAT = "augflow-dsl-checkpoint"
VERSION = 1
META_SKIP = ("model", "ema", "optimizer", "rng")


class CheckpointError(Exception):
    """A checkpoint that cannot be used: missing, truncated, corrupted, foreign, or of another spec."""


def spec_hash(text: str, overrides: dict[str, Any] | None = None) -> str:
    """sha256 of the spec text and its overrides (sorted JSON): what identifies an architecture."""
    blob = text + "\0" + json.dumps(overrides or {}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename, fsync the folder)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "version": VERSION, **state}
    buf = io.BytesIO()
    torch.save(state, buf)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def resolve(run_or_ckpt: str | Path) -> Path:
    """A run folder -> its ``checkpoints/last.pt``; a file -> itself."""
    p = Path(run_or_ckpt)
    if p.is_dir():
        last = p / "checkpoints" / "last.pt"
        if not last.is_file():
            raise CheckpointError(f"{p}: no checkpoint in this folder (looked for {last})")
        return last
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint file or run folder")
    return p


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (a run folder reads its last.pt);
    CheckpointError names the file and what is wrong with it."""
    import pickle
    import zipfile

    import torch

    p = resolve(path)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError,
            AttributeError, KeyError, IndexError, TypeError) as e:
        text = str(e).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        if "Unsupported global" in text:
            glob = text[text.index("Unsupported global"):].split(" was not")[0]
            raise CheckpointError(f"{p}: holds Python objects, not only tensors and plain values ({glob}); it was "
                                  f"not written by augflow-dsl's runtime, and is not unpickled for safety") from None
        raise CheckpointError(f"{p}: not a readable checkpoint (truncated or corrupted?): {first[:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not an augflow-dsl checkpoint (no '{FORMAT}' marker); a model saved by "
                              f"'augflow-dsl compile --out' or 'import' is read by af.load_model, a foreign "
                              f"state dict by 'augflow-dsl import'")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"{p}: checkpoint version {ckpt['version']} is newer than this augflow-dsl "
                              f"understands ({VERSION}); upgrade augflow-dsl")
    missing = [k for k in ("spec_text", "model", "step") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{p}: checkpoint lacks {', '.join(missing)}")
    return ckpt


def model_state(ckpt: dict, ema: bool = True) -> dict:
    """The weights to evaluate with: the EMA's when present and asked for, else the model's."""
    if ema and ckpt.get("ema"):
        return {k[len("module."):]: v for k, v in ckpt["ema"].items() if k.startswith("module.")}
    return ckpt["model"]


def load_state(model, state: dict, where: str, force: bool = False) -> list[str]:
    """Load ``state`` into ``model``; refuse with the first mismatched keys and shapes. With
    ``force``, load the tensors whose names and shapes match and return the names left out."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shaped = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if (missing or extra or shaped) and not force:
        lines = [f"{k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)}" for k in shaped[:5]]
        lines += [f"{k}: missing from the checkpoint" for k in missing[:5]]
        lines += [f"{k}: in the checkpoint but not in the model" for k in extra[:5]]
        n = len(missing) + len(extra) + len(shaped)
        raise CheckpointError(f"{where}: the checkpoint does not fit this model ({n} mismatched keys; first: "
                              + "; ".join(lines) + ")")
    keep = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(keep, strict=not force)
    return missing + shaped


def load_model(run_or_ckpt: str | Path, *, ema: bool = True, map_location: Any = "cpu"):
    """(model, spec, meta) from a run folder or checkpoint: the model rebuilt from the spec text the
    checkpoint holds, with the EMA weights when it has them and ``ema`` is set, in eval mode;
    ``meta`` is the checkpoint without its big state dicts."""
    from ..compiler.model import compile_spec
    from ..errors import SpecError
    from ..language.load import loads

    p = resolve(run_or_ckpt)
    ckpt = load_checkpoint(p, map_location)
    try:
        spec = loads(ckpt["spec_text"], ckpt.get("spec_file", "<checkpoint>"), ckpt.get("overrides") or {})
        model = compile_spec(spec)
    except SpecError as e:
        raise CheckpointError(f"{p}: the spec stored in the checkpoint no longer compiles: {e}") from None
    load_state(model, model_state(ckpt, ema), str(p))
    model.eval()
    meta = {k: v for k, v in ckpt.items() if k not in META_SKIP}
    meta["path"] = str(p)
    meta["weights"] = "ema" if ema and ckpt.get("ema") else "model"
    return model, spec, meta


__all__ = ["CheckpointError", "FORMAT", "load_checkpoint", "load_model", "load_state", "model_state", "resolve",
           "save_checkpoint", "spec_hash"]
