"""Command-line overrides: ``--set NAME=VALUE`` items parsed into spec variables and ``train:`` keys
(the one parser for ``train``, ``check --memory``, ``sweep`` and the API)."""
from __future__ import annotations

from typing import Any

from ..errors import SpecError

CONSTANTS = {"true": True, "false": False, "none": None}


def parse_override(text: str) -> tuple[str, Any]:
    """``"growth=6"`` -> ("growth", 6); values are numbers, true/false or names."""
    if "=" not in text:
        raise SpecError(f"override '{text}' must look like name=value")
    key, _, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not key.isidentifier():
        raise SpecError(f"override '{text}': '{key}' is not a name")
    for conv in (int, float):
        try:
            return key, conv(raw)
        except ValueError:
            pass
    if raw.lower() in CONSTANTS:
        return key, CONSTANTS[raw.lower()]
    return key, raw


TRAIN_PREFIX = "train."


def split_overrides(items) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--set`` items (``NAME=VALUE`` strings) or a mapping -> (spec variables, ``train:`` keys):
    ``train.KEY=VALUE`` reaches the spec's train: block, and ``train.augment=flip,translate`` is
    a list, as the spec writes it. One parser for ``train``, ``check --memory`` and the API."""
    if items is None:
        return {}, {}
    if isinstance(items, dict):
        train = {k[len(TRAIN_PREFIX):]: v for k, v in items.items() if k.startswith(TRAIN_PREFIX)}
        return {k: v for k, v in items.items() if not k.startswith(TRAIN_PREFIX)}, train
    variables: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for item in items:
        if not item.startswith(TRAIN_PREFIX):
            key, value = parse_override(item)
            variables[key] = value
            continue
        key, eq, raw = item[len(TRAIN_PREFIX):].partition("=")
        if not eq or not key.isidentifier():
            raise SpecError(f"--set {item}: expected train.KEY=VALUE")
        if key == "augment":
            train[key] = [v.strip() for v in raw.strip("[]").split(",") if v.strip()]
        else:
            train[key] = parse_override(f"{key}={raw}")[1]
    return variables, train


__all__ = ["CONSTANTS", "TRAIN_PREFIX", "parse_override", "split_overrides"]
