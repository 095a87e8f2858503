"""A launcher's settings (the ``--launcher`` flags of ``train`` and ``sweep``), checked before anything
is submitted: SLURM's time and memory formats, a KEY=VALUE for each extra ``#SBATCH`` line."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

LAUNCHERS = ("local", "submitit", "submitit-local")


class LauncherError(Exception):
    """A launcher that cannot be used (bad settings, submitit not installed, no SLURM here)."""


def parse_time(text: str) -> int:
    """SLURM's ``--time`` formats (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) -> whole minutes
    (seconds round up)."""
    t = str(text).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", t)
    if not m:
        raise LauncherError(f"--time {text}: expected minutes, HH:MM:SS or D-HH:MM:SS (e.g. 24:00:00)")
    days, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if days is not None:       # D-HH[:MM[:SS]]
        h, mi, s = a, b or 0, c or 0
    elif c is not None:        # HH:MM:SS
        h, mi, s = a, b, c
    elif b is not None:        # MM:SS
        h, mi, s = 0, a, b
    else:                      # minutes
        h, mi, s = 0, a, 0
    minutes = (days or 0) * 1440 + h * 60 + mi + (1 if s else 0)
    if minutes < 1:
        raise LauncherError(f"--time {text}: a job needs at least one minute")
    return minutes


def parse_mem(text: str) -> str:
    """SLURM's ``--mem`` (a number with an optional K, M, G or T unit; megabytes without one)."""
    t = str(text).strip().upper().removesuffix("B")
    if not re.fullmatch(r"\d+[KMGT]?", t):
        raise LauncherError(f"--mem {text}: expected a size such as 64G or 16000M")
    return t


class LauncherSettings(BaseModel):
    """What ``--launcher submitit|submitit-local`` submits with (stored in ``sweep.json``'s options)."""

    kind: Literal["submitit", "submitit-local"] = "submitit"
    partition: str | None = None
    gpus_per_node: int = Field(0, ge=0)
    nodes: int = Field(1, ge=1)
    time: str = "24:00:00"
    cpus_per_task: int | None = Field(None, ge=1)
    mem: str | None = None
    array_parallelism: int = Field(256, ge=1)
    extra: dict[str, str] = Field(default_factory=dict)   # --slurm-extra KEY=VALUE: #SBATCH --KEY=VALUE

    @property
    def tasks_per_node(self) -> int:
        """One task (one process) per GPU; one task on a CPU job."""
        return max(1, self.gpus_per_node)

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node

    def checked(self) -> "LauncherSettings":
        parse_time(self.time)
        if self.mem is not None:
            self.mem = parse_mem(self.mem)
        if self.kind == "submitit-local" and self.nodes > 1:
            raise LauncherError("--launcher submitit-local runs on this machine: --nodes must be 1")
        for k in self.extra:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", k):
                raise LauncherError(f"--slurm-extra {k}=...: not an sbatch option name (e.g. account=proj1)")
        return self


def parse_extra(items: list[str] | None) -> dict[str, str]:
    """``--slurm-extra KEY=VALUE`` items -> {KEY: VALUE} (an #SBATCH --KEY=VALUE line each)."""
    out: dict[str, str] = {}
    for item in items or []:
        k, eq, v = item.partition("=")
        if not eq or not k.strip():
            raise LauncherError(f"--slurm-extra {item}: expected KEY=VALUE (e.g. --slurm-extra account=proj1)")
        out[k.strip()] = v.strip()
    return out


__all__ = ["LAUNCHERS", "LauncherError", "LauncherSettings", "parse_extra", "parse_mem", "parse_time"]
