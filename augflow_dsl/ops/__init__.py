"""The op registry and every op definition (pure Python: importing this never imports torch)."""
from . import (augment, contexts, coupling, dequantize, drops, elementwise, linear, net_ops,  # noqa: F401
               normalize, priors, reshape, block)
from .registry import REGISTRY, NetIO, Op, OpCall, OpEnv, OpShapeError, QFlow, get, names  # noqa: F401
