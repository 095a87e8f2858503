"""What a resumed run may change, and the checks that it changed nothing else (issue 24).

``train --resume RUN`` may take, on the command line, ``--set train.KEY=VALUE`` for the keys in
:data:`RESUME_TRAIN_KEYS` (lr, clip, warmup, steps) and ``--steps`` / ``--epochs``. Each such change
is recorded in the run's config.json as ``{"step": N, "train": {...}, "options": {...}}`` under
``"changes"`` (N: the checkpoint's step, where the change takes effect), and later resumes apply
the recorded changes in order. Any other difference between the train block the run would use
(config.json plus recorded changes) and the one the checkpoint holds, such as an edited ``batch``
or ``train_overrides.lr``, is refused: the checkpoint is the truth of how the run was trained.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from .run_folder import TrainError

RESUME_TRAIN_KEYS = frozenset({"lr", "clip", "warmup", "steps"})
LENGTH_OPTIONS = ("steps", "epochs")
# train keys that --steps / --epochs set (TrainSpec.merged)
LENGTH_KEYS = frozenset({"steps", "epochs", "finetune_epochs"})


def changed_keys(change: dict) -> set[str]:
    """The train keys one change (``{"train": ..., "options": ...}``) may move."""
    keys = set((change.get("train") or {}))
    if any(k in (change.get("options") or {}) for k in LENGTH_OPTIONS) or "steps" in keys:
        keys |= LENGTH_KEYS
    return keys


def recorded_changes(run: str | Path) -> list[dict]:
    """The changes config.json records (none for a run never resumed with overrides)."""
    try:
        changes = json.loads((Path(run) / "config.json").read_text()).get("changes") or []
    except (OSError, ValueError, AttributeError):
        return []
    return [c for c in changes if isinstance(c, dict)]


def refuse_mismatch(saved: dict, train: dict, allowed: set[str], run: str | Path) -> None:
    """TrainError when ``train`` (this resume's) differs from ``saved`` (the checkpoint's) in a key
    outside ``allowed`` (the command line's and the recorded changes')."""
    diff = [k for k in sorted(train) if k in saved and saved[k] != train[k] and k not in allowed]
    if diff:
        what = "; ".join(f"{k}: {saved[k]!r} in the checkpoint, {train[k]!r} now" for k in diff)
        raise TrainError(f"{run}: config.json does not match the checkpoint's train settings ({what}). config.json "
                         f"was edited after the run started; restore it. A resume may change only "
                         f"{', '.join(sorted(RESUME_TRAIN_KEYS))} on the command line: "
                         f"'augflow-dsl train --resume {run} --set train.lr=...' (or --steps N)")


def record_change(run: str | Path, step: int, change: dict) -> None:
    """Append one change at ``step`` to config.json (atomically)."""
    path = Path(run) / "config.json"
    cfg = json.loads(path.read_text())
    entry = {"step": step, **{k: v for k, v in change.items() if v},
             "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    cfg["changes"] = [*(cfg.get("changes") or []), entry]
    tmp = path.with_name("config.json.tmp")
    tmp.write_text(json.dumps(cfg, indent=2, default=str))
    tmp.replace(path)


def past_length(run: str | Path, step: int, total: int) -> str:
    """The message for a resume asked to stop at or before the step the run is already at."""
    if step == total:
        return (f"{run} is already at step {step}, its full length: nothing to train. To train longer: "
                f"'augflow-dsl train --resume {run} --steps N' with N > {step}")
    return (f"{run} is at step {step}, past the asked length of {total} steps (step {step} >= {total}): nothing "
            f"to train, and a run cannot go back. To train further: 'augflow-dsl train --resume {run} --steps N' "
            f"with N > {step}; for a {total}-step model, start a new --run with --steps {total}")


__all__ = ["RESUME_TRAIN_KEYS", "changed_keys", "past_length", "record_change", "recorded_changes",
           "refuse_mismatch"]
