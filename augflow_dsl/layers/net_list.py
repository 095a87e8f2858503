"""Torch side of the nets written as layer lists (:mod:`augflow_dsl.ops.net_list`): the modules of the
description types only these nets use (a net's actnorm, Glow's Conv2dZeros, concat_elu) and the net
itself, a :class:`~.net_modules.DescribedNet` (its description run on cat(x, context))."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import net_descriptions as nl
from ..ops import net_list as op_defs
from .base import InitOnce
from .instantiate import build, build_children, builds
from .net_modules import ConcatELU, DescribedNet
from .registry import implements

__all__ = ["NetActNorm", "ZeroConv", "Residual", "LayeredNet"]

builds(nl.ConcatELU)(lambda d: ConcatELU())


@builds(nl.ActNorm)
class NetActNorm(InitOnce, nn.Module):
    """Glow's actnorm inside a net (glow model.py actnorm): (x + b) * exp(logs) per channel; on its
    first forward in training mode b and logs are set so that the batch's output has zero mean and
    unit variance per channel (a buffer records that it ran)."""

    def __init__(self, d: nl.ActNorm):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(d.channels))
        self.logs = nn.Parameter(torch.zeros(d.channels))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self._needs_init():
            with torch.no_grad():
                dims = [0, *range(2, x.dim())]
                self.bias.copy_(-x.mean(dims))
                self.logs.copy_(-torch.log(x.std(dims, unbiased=False) + 1e-6))
                self._mark_initialized()
        return (x + self.bias.view(shape)) * torch.exp(self.logs.view(shape))


@builds(nl.ZeroConv)
class ZeroConv(nn.Module):
    """Glow's Conv2dZeros (glow model.py conv2d_zeros): conv(x) * exp(logscale * logs), conv and logs
    starting at zero."""

    def __init__(self, d: nl.ZeroConv):
        super().__init__()
        self.logscale = d.logscale
        build_children(self, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.exp(self.logs * self.logscale)


@builds(nl.Residual)
class Residual(nn.Module):
    """x + body(x) (:class:`~augflow_dsl.ops.net_descriptions.Residual`, the net layer ``residual``)."""

    def __init__(self, d: nl.Residual):
        super().__init__()
        build_children(self, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@implements(op_defs.Layers)
class LayeredNet(DescribedNet):
    """A net written in the spec as a list of net layers: a Sequential of their modules on
    cat(x, context) (:class:`~augflow_dsl.ops.net_list.Layers`)."""


@builds(nl.WeightNorm)
def _weight_norm(d: nl.WeightNorm) -> nn.Module:
    """torch's weight_norm parametrization (dim 0) of the conv or linear ``d.layer`` builds."""
    return nn.utils.parametrizations.weight_norm(build(d.layer), dim=0)
