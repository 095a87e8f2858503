"""Layer descriptions: what a net is made of, written once (pure Python, no torch).

A net op's ``describe`` returns a tree of these frozen dataclasses. Its parameters and its
MACs (multiply-accumulates per example) are derived from the tree: the sum over the leaves,
plus the parameter-free matrix products an attention block declares in ``own_macs``. The
torch side builds one module per node from the same tree
(:func:`augflow_dsl.layers.instantiate.build`), each child under the name the tree gives it, so
numel() and torch's flop counter meet the counts by construction (tests/test_nets.py).

Children are the fields whose values are layers, in field order (which is the modules'
registration order, hence the state-dict order); a ``None`` field is an absent child.

Memory: ``kept(x, p)`` says what a layer keeps alive for the backward pass when it reads the
activation ``x`` (:class:`Act`: elements per example, bytes each, layout), one rule per description
type, written from what its torch module saves (measured with ``saved_tensors_hooks``,
tests/test_memory.py); ``augflow-dsl check --memory`` adds them up (:mod:`augflow_dsl.graph.memory`).

The types live in three modules, re-exported here (the public face; import from here):
:mod:`.net_memory` (what a layer keeps: :class:`Precision`, :class:`Act`, :class:`Kept`, :func:`chain`),
:mod:`.net_layers` (the :class:`Layer` node, the leaves and the containers) and :mod:`.net_blocks`
(the composite blocks).
"""
from __future__ import annotations

from .net_blocks import *  # noqa: F401,F403
from .net_blocks import __all__ as _blocks
from .net_layers import *  # noqa: F401,F403
from .net_layers import __all__ as _layers
from .net_memory import *  # noqa: F401,F403
from .net_memory import __all__ as _memory

__all__ = [*_memory, *_layers, *_blocks]
