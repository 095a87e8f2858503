"""The sweep folder: ``sweep.json`` made from the command's settings (or read back, refusing a folder
that holds another sweep), ``results.jsonl`` appended to and read back, atomic writes, and the command
line that makes and continues the sweep."""
from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .grid import fmt, parse_grid
from .records import IDENTITY_FLAGS, PointResult, SweepConfig, SweepError, SweepUsageError

def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_atomic(path: Path, text: str) -> None:
    """Write atomically (a temporary file renamed over the old one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _read_config(folder: Path) -> SweepConfig | None:
    path = folder / "sweep.json"
    if not path.is_file():
        return None
    try:
        cfg = SweepConfig.model_validate_json(path.read_text())
    except ValueError as e:
        raise SweepError(f"{path}: not a readable sweep.json ({str(e).splitlines()[0]})") from None
    cfg.train = {k: cfg.train.get(k) for k in IDENTITY_FLAGS}  # a sweep.json from before a flag existed: None
    return cfg


def _own_data(text: str, spec: str | Path, data: str | None) -> str | None:
    """The absolute path of the sweep's own data: ``--data``, or the spec's own ``data.path`` taken from the
    spec file's folder (as ``train`` reads it), so that the points, their evaluation, their jobs and a
    ``--resume`` from another folder all read the same files; None for a named data set."""
    if data:
        return str(Path(data).expanduser().resolve())
    from ...errors import SpecError
    from ...language.datasets import OWN_SETS, with_data
    from ...language.load import loads

    try:
        located = with_data(loads(text, str(spec)))
    except (SpecError, ValueError):  # the points report their own errors
        return None
    return located.data.path if located.data.dataset in OWN_SETS else None


def sweep_config(spec: str | None, sets: list[str], *, resume: str | None = None, out: str | None = None,
                 train: dict[str, Any] | None = None, samples: int | None = None,
                 options: dict[str, Any] | None = None) -> tuple[SweepConfig, Path, bool]:
    """(the sweep's config, its folder, whether the folder already held it). ``spec`` and ``sets`` (the
    ``--set`` items) make a new sweep in ``out`` (default ``sweeps/<spec name>/<UTC time>/``);
    ``resume`` names a sweep folder to continue with its own spec and grid. ``train`` holds the
    result-defining settings (:data:`IDENTITY_FLAGS`, None: the spec's), ``options`` those that may change
    on a rerun (:data:`OPTION_FLAGS`, only those given). Refuses a folder holding another sweep."""
    train = {k: (train or {}).get(k) for k in IDENTITY_FLAGS}
    options = {k: v for k, v in (options or {}).items() if v is not None}
    if resume:
        if spec or sets:
            raise SweepUsageError("--resume takes the spec and --set grid from the sweep folder; drop SPEC and --set")
        if out and Path(out) != Path(resume):
            raise SweepUsageError("--resume DIR already names the sweep folder; drop --out")
        refused = sorted(k for k, v in {**train, "samples": samples}.items() if v is not None)
        if refused:
            raise SweepUsageError("--resume keeps the sweep's settings; these cannot change: "
                                  + ", ".join("--" + k.replace("_", "-") for k in refused))
        folder = Path(resume)
        cfg = _read_config(folder)
        if cfg is None:
            raise SweepError(f"{folder} is not a sweep folder (no sweep.json)")
        cfg.options = {**cfg.options, **options}
        return cfg, folder, True
    if not spec:
        raise SweepUsageError("sweep needs a SPEC (or --resume SWEEP_DIR)")
    if not Path(spec).is_file():
        raise SweepUsageError(f"no such spec file: {spec}")
    grid = parse_grid(sets)
    try:
        text = Path(spec).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SweepError(f"cannot read {spec}: {getattr(e, 'strerror', None) or e}") from None
    train["data"] = _own_data(text, spec, train.get("data"))
    cfg = SweepConfig(spec_file=str(spec), spec_name=_spec_name(text, spec), spec_hash=_hash(text),
                      spec_text=text, axes=grid.axes, fixed=grid.fixed, train=train, samples=samples,
                      options=options, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if out:
        folder = Path(out)
    else:
        folder = Path("sweeps") / cfg.spec_name / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    old = _read_config(folder)
    if old is None:
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise SweepError(f"{folder} exists and is not a sweep folder (no sweep.json); use another --out")
        return cfg, folder, False
    diffs = [f"{k}: {_show(old.identity()[k], k)} in the folder, {_show(v, k)} now"
             for k, v in cfg.identity().items() if old.identity()[k] != v]
    if diffs:
        raise SweepError(f"{folder} holds another sweep ({'; '.join(diffs)}); use another --out, or continue "
                         f"that one with: augflow-dsl sweep --resume {folder}")
    old.options = {**old.options, **options}
    return old, folder, True


def _show(v: Any, key: str) -> str:
    if key == "spec":
        return f"spec hash {str(v)[:12]}"
    return json.dumps(v)


def _spec_name(text: str, path: str) -> str:
    """The spec's ``flow:`` name (the file's stem when the spec does not load as it is)."""
    from ...errors import SpecError
    from ...language.load import loads
    try:
        return loads(text, path).name
    except SpecError:
        return Path(path).stem


def command_line(cfg: SweepConfig, folder: Path) -> str:
    """The command line that makes (and continues) this sweep."""
    parts = ["augflow-dsl sweep", cfg.spec_file]
    for k, v in cfg.axes.items():
        parts.append(f"--set {k}={','.join(fmt(x) for x in v)}")
    for k, v in cfg.fixed.items():
        parts.append(f"--set {k}={','.join(v) if isinstance(v, list) else fmt(v)}")
    for k, v in cfg.train.items():
        if v is not None:
            parts.append(f"--{k.replace('_', '-')} {v}")
    if cfg.samples is not None:
        parts.append(f"--samples {cfg.samples}")
    parts.append(f"--out {folder}")
    return " ".join(parts)


def load_results(folder: Path) -> dict[str, PointResult]:
    """The finished points of ``results.jsonl`` (the last row of each name; a torn last line is ignored)."""
    path = folder / "results.jsonl"
    out: dict[str, PointResult] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            row = PointResult.model_validate_json(line)
        except ValueError:
            continue
        out[row.name] = row
    return out


def append_result(folder: Path, row: PointResult) -> None:
    with (folder / "results.jsonl").open("a") as f:
        f.write(row.model_dump_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


