"""Which torch layer implements which op: the layer side registers itself.

A layer class declares the op it implements with :func:`implements` (the op's definition class
from :mod:`augflow_dsl.ops`, not its name: op names live in ops/ and in specs only)::

    @implements(coupling_ops.AffineCoupling)
    class AffineCoupling(_Coupling): ...

The decorator records the class under the op's name in :data:`LAYERS` and sets the class's
``op`` attribute to the op's definition class, so the layer learns its op from it
(:func:`op_of`). The compiler asks :func:`layer_of` for the class of an op. Importing
:mod:`augflow_dsl.layers` imports every module of the package, so each built-in layer is
registered before the first look-up; a layer defined elsewhere (an extension) registers when its
own module is imported. The ops stay torch-free and never name their layers.
"""
from __future__ import annotations

from typing import TypeVar

from ..ops import registry as op_registry
from ..ops.registry import Op

LAYERS: dict[str, type] = {}
"""op name -> the layer class that implements it."""

L = TypeVar("L", bound=type)


def _name(op: str | Op | type[Op]) -> str:
    if isinstance(op, str):
        return op
    if isinstance(op, Op) or (isinstance(op, type) and issubclass(op, Op)):
        return op.name
    raise TypeError(f"expected an op, an op class or an op name; got {op!r}")


def implements(op: type[Op]):
    """Class decorator: the decorated layer class implements ``op`` (an :class:`~augflow_dsl.ops.registry.Op`
    subclass). Registering a second, different class for the same op is an error."""
    if not (isinstance(op, type) and issubclass(op, Op)):
        raise TypeError(f"@implements takes an op definition class (an Op subclass); got {op!r}")

    def register(cls: L) -> L:
        have = LAYERS.get(op.name)
        if have is not None and (have.__module__, have.__qualname__) != (cls.__module__, cls.__qualname__):
            raise RuntimeError(f"op '{op.name}' already has the layer {have.__module__}:{have.__qualname__}")
        LAYERS[op.name] = cls
        cls.op = op
        return cls
    return register


def layer_of(op: str | Op | type[Op]) -> type:
    """The layer class implementing ``op`` (a registered op, its class, or its name)."""
    name = _name(op)
    try:
        return LAYERS[name]
    except KeyError:
        raise NotImplementedError(f"op '{name}' has no torch layer (no class is decorated @implements for it)") \
            from None


def unregister(op: str | Op | type[Op]) -> type | None:
    """Remove the layer registered for ``op`` (tests that add ops remove them after); the class,
    or None when there was none."""
    return LAYERS.pop(_name(op), None)


def has_layer(op: str | Op | type[Op]) -> bool:
    return _name(op) in LAYERS


def op_of(layer_cls: type) -> Op:
    """The registered op that ``layer_cls`` implements (set by :func:`implements`)."""
    op = getattr(layer_cls, "op", None)
    if op is None:
        raise KeyError(f"{layer_cls.__module__}:{layer_cls.__qualname__} is not decorated with @implements")
    return op_registry.get(op.name)
