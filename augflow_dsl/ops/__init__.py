"""The op registry and every op definition (pure Python: importing this never imports torch).

Importing the package imports every module in it, so an op class decorated with ``@register``
in any of them is registered; a new op module needs no edit here.
"""
import importlib as _importlib
import pkgutil as _pkgutil

from .registry import REGISTRY, NetIO, Op, OpCall, OpEnv, OpShapeError, QFlow, get, names  # noqa: F401

for _module in _pkgutil.iter_modules(__path__):
    _importlib.import_module(f"{__name__}.{_module.name}")
del _module
