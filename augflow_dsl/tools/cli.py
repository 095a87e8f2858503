"""Registers the tools' subcommands: each module in ``TOOLS`` has ``add_command(sub, common)``
(its parser, with torch imported only when the command runs)."""
from __future__ import annotations

import importlib

TOOLS = ("solve", "diff", "draw", "sweep", "export")


def add_commands(sub, common) -> None:
    for name in TOOLS:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as e:  # a tool still being written: its command is absent, nothing else breaks
            if e.name != f"{__package__}.{name}":
                raise
            continue
        module.add_command(sub, common)
