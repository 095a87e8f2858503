"""The training runtime (installed as ``augflow_dsl.runtime``): data, schedule, training loop,
checkpoints, evaluation, FID and sampling. ``lr_at`` is importable without torch."""
from .schedule import lr_at, main_steps, total_steps

__all__ = ["lr_at", "main_steps", "total_steps"]
