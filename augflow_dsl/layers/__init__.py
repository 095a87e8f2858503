"""Torch modules implementing the registry's ops (imported by compile, never by check).

Importing this package imports every module in it, so each layer class that declares its op with
``@implements`` (:mod:`.registry`) is registered before the first :func:`layer_of`; a new
module needs no list to be kept here.
"""
from __future__ import annotations

import importlib
import pkgutil

from .registry import LAYERS, has_layer, implements, layer_of, op_of, unregister  # noqa: F401

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
del _module
