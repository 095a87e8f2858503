"""Interfaces of the torch layers that implement the registry's ops.

* :class:`Bijection`: ``forward(x, cond=None) -> (y, logdet)`` and
  ``inverse(y, cond=None) -> (x, logdet)``, mirror images of each other; ``logdet`` is
  log|det dy/dx| per example, shape [N] (the inverse returns log|det dx/dy|).
* conditioner nets (``NetModule``): ``forward(x, context=None) -> params`` with
  ``params`` of shape [N, io.c_out, io.h, io.w] (or [N, io.c_out] for vectors);
  built by ``from_op(args, io)``; the last layer starts at zero.
* context nets (``ContextModule``): ``forward(x) -> context``; built by
  ``from_op(args, in_shape, bits)``; ``bits`` is the data's bit depth (None when the
  context reads continuous data).
"""
from __future__ import annotations

import torch
from torch import nn


class Bijection(nn.Module):
    """Base of invertible layers. Subclasses implement forward and inverse."""

    def forward(self, x: torch.Tensor, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def inverse(self, y: torch.Tensor, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class NetModule(nn.Module):
    @classmethod
    def from_op(cls, args, io) -> "NetModule":
        raise NotImplementedError


class ContextModule(nn.Module):
    @classmethod
    def from_op(cls, args, in_shape, bits) -> "ContextModule":
        raise NotImplementedError


def zeros_like_batch(x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(x.shape[0])


def sum_except_batch(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).sum(-1)


def zero_init(layer: nn.Module) -> nn.Module:
    for p in layer.parameters():
        nn.init.zeros_(p)
    return layer


class UsesNets:
    """Mixin of layers that call conditioner nets. ``autocast_dtype`` (set by
    ``FlowModel.set_precision``) runs the nets under autocast (bf16 on CUDA) while the flow's own
    arithmetic -- log-dets, the mixture CDF and its bisection -- stays in float32."""

    autocast_dtype: torch.dtype | None = None

    def run_net(self, net, *args):
        if self.autocast_dtype is None:
            return net(*args)
        with torch.autocast(args[0].device.type, dtype=self.autocast_dtype):
            out = net(*args)
        return out.float()


class InitOnce:
    """Mixin of layers with a data-dependent init: the ``initialized`` buffer is the state that
    is saved and loaded; ``_done`` mirrors it as a plain Python bool so that the check costs no
    tensor read (and gives torch.compile no graph break)."""

    _done: bool = False

    def _needs_init(self) -> bool:
        return self.training and not self._done

    def _mark_initialized(self) -> None:
        self.initialized.fill_(True)
        self._done = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        key = prefix + "initialized"
        if key in state_dict:
            self._done = bool(state_dict[key])
