"""Where an exported model comes from: a ``.flow`` spec compiled with fresh weights, a saved model
file, or a run folder / checkpoint."""
from __future__ import annotations

from pathlib import Path

from .diagnosis import ExportError


def load_source(source: str, overrides: list[str] | None = None, seed: int = 0):
    """(model, where it came from): a ``.flow`` spec compiled with fresh weights drawn under
    ``seed`` (``overrides`` apply), a model saved by ``augflow-dsl compile --out``, or a run
    folder / checkpoint (EMA weights when present). Raises ExportError or SpecError."""
    import torch

    from ...compiler.model import compile_spec
    from ...compiler.model_file import ModelFileError, load_model

    p = Path(source)
    if not p.exists():
        raise FileNotFoundError(source)
    if p.is_file() and (p.suffix == ".flow" or _is_text(p)):
        from ...language.load import load
        torch.manual_seed(seed)
        return compile_spec(load(str(p), overrides or [])).eval(), f"spec {p} (fresh weights, seed {seed})"
    if overrides:
        raise ExportError(f"{p}: --set applies to a .flow spec only; a saved model carries its own spec", 2)
    try:
        model, _, meta = load_model(p)
    except ModelFileError as e:
        if p.is_file() and "not a readable checkpoint" in str(e):
            raise ExportError(f"{p}: neither a .flow spec nor a readable model file ({str(e).partition(': ')[2]})") \
                from None
        raise ExportError(str(e)) from None
    if meta["kind"] == "compiled":
        return model.eval(), f"saved model {p}"
    return model.eval(), f"checkpoint {meta['path']} ({meta['weights']} weights)"


def _is_text(p: Path) -> bool:
    """A spec whatever its suffix: UTF-8 text (a torch.save file is a zip archive or a pickle)."""
    try:
        head = p.open("rb").read(1 << 16)
        head.decode()
    except (OSError, UnicodeDecodeError):
        return False
    return not head.startswith(b"PK") and "\x00" not in head.decode()
