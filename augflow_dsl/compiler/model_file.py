"""The one on-disk model format: what ``compile --out``, ``train`` and ``import`` write, and the one
loader (``af.load_model``) that reads it, and the two older formats users may still have.

A model file is one ``torch.save`` dict, read with ``weights_only=True`` (plain containers,
numbers, strings and tensors only: reading a file never runs code; there is no trust-pickle
switch for our own files, only ``import`` reads foreign pickles, and only when asked):

``format``      "augflow-dsl-model"
``version``     3 (2: no ``checksum``; both are read)
``kind``        "compiled" | "trained" | "imported"
``spec_text``, ``spec_file``, ``spec_name``, ``spec_hash`` (sha256 of text and overrides),
``overrides``   the spec variables set at compile / train / import time
``model``       the model's state dict (data-dependent initialisation included)
``ema``         the EMA's state dict (``torch.optim.swa_utils.AveragedModel`` layout) or None
``versions``    augflow_dsl, torch, python, numpy (strings)
``checksum``    {"model": hex, "ema": hex or None}: sha256 over each state dict's tensors (key, dtype,
                shape and raw bytes, keys in sorted order; :func:`state_checksum`), checked on every
                read, so a flipped byte is refused by name instead of trained, evaluated or exported

and, by kind:

trained     ``train_overrides``, ``optimizer``, ``step`` (updates done), ``epoch``, ``position``
            (global batches done in that epoch), ``rng`` (every generator's state, one per rank),
            ``train`` (the resolved TrainSpec), ``best_bpd``, ``world_size``, ``elapsed``: all a
            bit-exact resume needs (runtime.train)
imported    ``imported`` ({kind, from, tensors}), ``train`` (the spec's train block or None), ``step`` 0

Older files are read and upgraded in memory by :func:`read_model_file`: "augflow-dsl-checkpoint"
(version 1: training and import before version 2; kind "imported" when it has an ``imported``
entry, else "trained"), "augflow-dsl/1" (``compile --out`` before version 2: ``state_dict``, ``name``;
kind "compiled") and version 2 (version 3 without the checksum, so nothing to verify).

Writing goes to a temporary file in the same folder, is flushed and fsync'ed, then renamed over
the old file (``os.replace`` is atomic on POSIX) and the folder fsync'ed: a crash or SIGKILL at any
moment leaves either the old file or the new one, never a torn file.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

FORMAT = "augflow-dsl-model"
VERSION = 3
KINDS = ("compiled", "trained", "imported")
LEGACY_CHECKPOINT = "augflow-dsl-checkpoint"  # version 1: train and import
LEGACY_COMPILED = "augflow-dsl/1"             # compile --out
BIG = ("model", "ema", "optimizer", "rng")     # left out of load_model's meta


class ModelFileError(Exception):
    """A model file that cannot be used: missing, truncated, corrupted, foreign, or of another spec."""


def spec_hash(text: str, overrides: dict[str, Any] | None = None) -> str:
    """sha256 of the spec text and its overrides (sorted JSON): what identifies an architecture."""
    blob = text + "\0" + json.dumps(overrides or {}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def versions() -> dict[str, str]:
    """Versions of what wrote a file (plain strings: TorchVersion is not weights_only-loadable)."""
    from importlib.metadata import PackageNotFoundError, version

    import numpy as np
    import torch

    try:
        ours = version("augflow-dsl")  # the installed distribution: what augflow_dsl.__version__ says
    except PackageNotFoundError:  # run from a source tree that was never installed
        ours = "unknown"
    return {"augflow_dsl": ours, "torch": str(torch.__version__), "python": platform.python_version(),
            "numpy": str(np.__version__)}


def state_checksum(state: dict | None) -> str | None:
    """sha256 over a state dict's tensors: for each key in sorted order, the key, dtype, shape and
    the tensor's raw bytes (entries that are not tensors hash their repr); None for no state."""
    import torch

    if state is None:
        return None
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k]
        h.update(k.encode("utf-8") + b"\0")
        if isinstance(v, torch.Tensor):
            t = v.detach().to("cpu").contiguous().reshape(-1)
            h.update(f"{t.dtype}{tuple(v.shape)}\0".encode())
            h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
        else:
            h.update(repr(v).encode("utf-8") + b"\0")
    return h.hexdigest()


def verify_checksum(d: dict, p: Path) -> None:
    """Refuse a version-3 file whose tensors do not hash to the stored checksum (ModelFileError)."""
    stored = d.get("checksum")
    if not isinstance(stored, dict):
        raise ModelFileError(f"{p}: model file version 3 lacks its tensor checksum (damaged)")
    for part in ("model", "ema"):
        state = d.get(part)
        if state is not None and not isinstance(state, dict):
            raise ModelFileError(f"{p}: '{part}' is a {type(state).__name__}, not a state dict (damaged)")
        if state_checksum(state) != stored.get(part):
            raise ModelFileError(f"{p}: the {part} weights do not match the file's checksum: the file is damaged "
                                 f"(flipped bytes?); use another checkpoint (checkpoints/best.pt) or retrain")


# ----------------------------------------------------------------------------- writing
def write_atomic(path: str | Path, payload: dict, make_folder: bool = False) -> None:
    """``torch.save(payload)`` to ``path`` atomically (temporary file, fsync, rename, fsync the folder);
    ``make_folder`` creates a missing folder (else OSError, as ``compile --out`` reports it)."""
    import torch

    path = Path(path)
    if make_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(payload, buf)
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


def save_model_file(path: str | Path, kind: str, *, spec_text: str, spec_file: str | None, spec_name: str | None,
                    overrides: dict[str, Any] | None, model: dict, ema: dict | None = None, make_folder: bool = False,
                    **extra) -> None:
    """Write one model file of ``kind`` (the fields the module docstring lists; ``extra`` holds the
    kind's own ones)."""
    if kind not in KINDS:
        raise ValueError(f"unknown model file kind {kind!r}; one of {', '.join(KINDS)}")
    overrides = dict(overrides or {})
    payload = {"format": FORMAT, "version": VERSION, "kind": kind, "spec_text": spec_text, "spec_file": spec_file,
               "spec_name": spec_name, "spec_hash": spec_hash(spec_text, overrides), "overrides": overrides,
               "model": model, "ema": ema, "versions": versions(),
               "checksum": {"model": state_checksum(model), "ema": state_checksum(ema)}}
    payload.update(extra)
    write_atomic(path, payload, make_folder)


def save_compiled(path: str | Path, model, overrides: dict | None = None) -> None:
    """``compile --out``: a compiled FlowModel with its spec text and overrides."""
    spec = getattr(model, "spec", None)
    save_model_file(path, "compiled", spec_text=model.spec_text, spec_file=getattr(spec, "file", None),
                    spec_name=model.name, overrides=overrides, model=model.state_dict())


def save_trained(path: str | Path, state: dict) -> None:
    """A training checkpoint: ``state`` holds spec_text, spec_file, overrides, model, ema and the
    resume fields (runtime.train writes it)."""
    state = dict(state)
    state.pop("spec_hash", None)  # recomputed from the text and overrides
    save_model_file(path, "trained", spec_text=state.pop("spec_text"), spec_file=state.pop("spec_file", None),
                    spec_name=state.pop("spec_name", None), overrides=state.pop("overrides", None),
                    model=state.pop("model"), ema=state.pop("ema", None), make_folder=True, **state)


def save_imported(path: str | Path, spec, overrides: dict | None, model: dict, ema: dict | None, *,
                  imported: dict) -> None:
    """``import``: a reference checkpoint's weights (and its EMA's) mapped onto ``spec``."""
    train = spec.train.model_dump() if getattr(spec, "train", None) is not None else None
    save_model_file(path, "imported", spec_text=spec.text, spec_file=spec.file, spec_name=spec.name,
                    overrides=overrides, model=model, ema=ema, train=train, step=0, imported=dict(imported),
                    make_folder=True)


# ----------------------------------------------------------------------------- reading
def resolve(run_or_file: str | Path) -> Path:
    """A run folder -> its ``checkpoints/last.pt``; a file -> itself."""
    p = Path(run_or_file)
    if p.is_dir():
        last = p / "checkpoints" / "last.pt"
        if not last.is_file():
            raise ModelFileError(f"{p}: no checkpoint in this folder (looked for {last})")
        return last
    if not p.exists():
        raise ModelFileError(f"{p}: no such checkpoint file or run folder")
    return p


def _upgrade(d: dict, p: Path) -> dict:
    """A version-1 checkpoint or an "augflow-dsl/1" compiled file as a version-3 dict (no checksum)."""
    if d.get("format") == LEGACY_COMPILED:
        if "spec_text" not in d or "state_dict" not in d:
            raise ModelFileError(f"{p}: saved model lacks its spec text or state dict")
        overrides = dict(d.get("overrides") or {})
        return {"format": FORMAT, "version": VERSION, "kind": "compiled", "spec_text": d["spec_text"],
                "spec_file": f"{p}:spec", "spec_name": d.get("name"), "spec_hash": spec_hash(d["spec_text"], overrides),
                "overrides": overrides, "model": d["state_dict"], "ema": None, "versions": None,
                "upgraded_from": LEGACY_COMPILED}
    if d.get("version", 0) > 1:
        raise ModelFileError(f"{p}: checkpoint version {d['version']} is newer than this augflow-dsl "
                             f"understands (1); upgrade augflow-dsl")
    out = {k: v for k, v in d.items() if k not in ("format", "version")}
    out = {"format": FORMAT, "version": VERSION, "kind": "imported" if d.get("imported") else "trained",
           "spec_name": None, **out, "upgraded_from": LEGACY_CHECKPOINT}
    return out


def read_model_file(path: str | Path, map_location: Any = "cpu") -> dict:
    """Read a model file of any producer and version (a run folder reads its last.pt) as a
    version-3 dict, a version-3 file's tensors checked against its checksum; ModelFileError names
    the file and what is wrong with it."""
    import pickle
    import zipfile

    import torch

    p = resolve(path)
    try:
        d = torch.load(p, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError,
            AttributeError, KeyError, IndexError, TypeError) as e:
        text = str(e).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        if "Unsupported global" in text:
            glob = text[text.index("Unsupported global"):].split(" was not")[0]
            raise ModelFileError(f"{p}: holds Python objects, not only tensors and plain values ({glob}); it was "
                                 f"not written by augflow-dsl's runtime, and is not unpickled for safety") from None
        raise ModelFileError(f"{p}: not a readable checkpoint (truncated or corrupted?): {first[:200]}") from None
    fmt = d.get("format") if isinstance(d, dict) else None
    if fmt in (LEGACY_CHECKPOINT, LEGACY_COMPILED):
        d = _upgrade(d, p)
    elif fmt != FORMAT:
        raise ModelFileError(f"{p}: not an augflow-dsl checkpoint (no '{FORMAT}' marker); a foreign state dict "
                             f"is read by 'augflow-dsl import'")
    if not isinstance(d.get("version", 0), int):
        raise ModelFileError(f"{p}: model file field 'version' is {d.get('version')!r}, not a number (damaged)")
    if d.get("version", 0) > VERSION:
        raise ModelFileError(f"{p}: model file version {d['version']} is newer than this augflow-dsl "
                             f"understands ({VERSION}); upgrade augflow-dsl")
    if fmt == FORMAT and d.get("version", 0) >= 3:
        verify_checksum(d, p)
    need = ["spec_text", "model"] + (["step"] if d.get("kind") == "trained" else [])
    missing = [k for k in need if k not in d]
    if missing:
        raise ModelFileError(f"{p}: checkpoint lacks {', '.join(missing)}")
    return d


def model_state(d: dict, ema: bool = True) -> dict:
    """The weights to evaluate with: the EMA's when present and asked for, else the model's."""
    if ema and d.get("ema"):
        return {k[len("module."):]: v for k, v in d["ema"].items() if k.startswith("module.")}
    return d["model"]


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
        raise ModelFileError(f"{where}: the checkpoint does not fit this model ({n} mismatched keys; first: "
                             + "; ".join(lines) + ")")
    keep = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(keep, strict=not force)
    return missing + shaped


def load_model(run_or_file: str | Path, *, ema: bool = True, map_location: Any = "cpu"):
    """(model, spec, meta) from a run folder or a model file of any producer (compiled, trained,
    imported; any version): the model rebuilt from the spec text the file holds, with the EMA
    weights when it has them and ``ema`` is set, in eval mode; ``meta`` is the file's dict without
    its big state dicts, plus ``path`` and ``weights`` ("ema" or "model")."""
    from ..errors import SpecError
    from ..language.load import loads
    from .model import compile_spec

    p = resolve(run_or_file)
    d = read_model_file(p, map_location)
    try:
        spec = loads(d["spec_text"], d.get("spec_file") or "<checkpoint>", d.get("overrides") or {})
        model = compile_spec(spec)
    except SpecError as e:
        raise ModelFileError(f"{p}: the spec stored in the checkpoint no longer compiles: {e}") from None
    load_state(model, model_state(d, ema), str(p))  # InitOnce layers read their 'initialized' buffers
    model.eval()
    meta = {k: v for k, v in d.items() if k not in BIG}
    meta["path"] = str(p)
    meta["weights"] = "ema" if ema and d.get("ema") else "model"
    return model, spec, meta


__all__ = ["BIG", "FORMAT", "KINDS", "LEGACY_CHECKPOINT", "LEGACY_COMPILED", "ModelFileError", "VERSION",
           "load_model", "load_state", "model_state", "read_model_file", "resolve", "save_compiled",
           "save_imported", "save_model_file", "save_trained", "spec_hash", "state_checksum", "verify_checksum",
           "versions", "write_atomic"]
