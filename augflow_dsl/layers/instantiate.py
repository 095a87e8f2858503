"""Torch modules from layer descriptions (:mod:`augflow_dsl.ops.net_descriptions`): one module per node.

``build(d)`` maps each description type to its module: the leaves here, the composite blocks
(dense layer, dense block, gated convs, attentions) in :mod:`.net_modules`, which register themselves
with ``@builds`` when the layers package is imported (it imports every module of it; nothing
here imports :mod:`.net_modules`). A composite module calls :func:`build_children`, so its submodules carry
the names and the registration order the description gives them (the state-dict keys).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..ops import net_descriptions as nl
from .base import zero_init
from .modules import ChannelLayerNorm, DataInitConv2d, Dropout, EdgeBiasConv2d, GemmConv2d

Built = nn.Module | nn.Parameter
_BUILDERS: dict[type, Callable[[nl.Layer], Built]] = {}


def builds(desc_type: type[nl.Layer]):
    """Register the module class (or function) that builds descriptions of ``desc_type``."""
    def register(make):
        _BUILDERS[desc_type] = make
        return make
    return register


def build(d: nl.Layer) -> Built:
    """The module (a parameter, for :class:`~augflow_dsl.ops.net_descriptions.Parameter`) described by ``d``."""
    make = _BUILDERS.get(type(d))
    if make is None:
        raise TypeError(f"no torch module is registered for the layer description {type(d).__name__}")
    return make(d)


def build_children(module: nn.Module, d: nl.Layer) -> None:
    """Build each child of ``d`` onto ``module`` under the child's name, in order."""
    for name, child in d.children():
        setattr(module, name, build(child))


@builds(nl.Conv)
def _conv(d: nl.Conv) -> nn.Conv2d:
    """Data init: :class:`DataInitConv2d`; channels-last: a 1x1 is a :class:`GemmConv2d`, a larger
    kernel an ``nn.Conv2d`` whose weight is stored channels-last like its input; edge bias: an
    :class:`EdgeBiasConv2d` (Glow's border channel); otherwise ``nn.Conv2d``."""
    shape = dict(in_channels=d.reads, out_channels=d.c_out, kernel_size=d.kernel, stride=d.stride,
                 padding=0 if d.edge_bias else d.padding, bias=d.bias)
    if d.edge_bias:
        conv: nn.Conv2d = EdgeBiasConv2d(**shape)
    elif d.init == "data":
        conv = DataInitConv2d(**shape, init_scale=d.init_scale)
    elif d.channels_last and d.kernel == 1:
        conv = GemmConv2d(**shape)
    elif d.channels_last:
        conv = nn.Conv2d(**shape).to(memory_format=torch.channels_last)
    else:
        conv = nn.Conv2d(**shape)
    return zero_init(conv) if d.init == "zero" else conv


@builds(nl.Linear)
def _linear(d: nl.Linear) -> nn.Linear:
    lin = nn.Linear(d.c_in, d.c_out, bias=d.bias)
    return zero_init(lin) if d.init == "zero" else lin


@builds(nl.Parameter)
def _parameter(d: nl.Parameter) -> nn.Parameter:
    return nn.Parameter(torch.randn(d.shape) * d.std)


_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "tanh": nn.Tanh}

builds(nl.BatchNorm)(lambda d: nn.BatchNorm2d(d.channels) if d.image else nn.BatchNorm1d(d.channels))
builds(nl.LayerNorm)(lambda d: ChannelLayerNorm(d.channels) if d.image else nn.LayerNorm(d.channels))
builds(nl.Activation)(lambda d: _ACTIVATIONS[d.kind]())
builds(nl.Dropout)(lambda d: Dropout(d.p))
builds(nl.Sequential)(lambda d: nn.Sequential(*(build(x) for x in d.layers)))
builds(nl.LayerList)(lambda d: nn.ModuleList(build(x) for x in d.layers))
