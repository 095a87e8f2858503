"""The one place that knows how a compiled :class:`~augflow_dsl.compiler.model.FlowModel` holds
its parts. Importers map reference tensors onto the modules listed here, and name our state-dict
keys through :func:`key_prefix`, so a change of FlowModel's attributes touches this file only."""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn


@dataclass
class QParts:
    """A q-network: context net (or None), base distribution, bijections (noise -> sample)."""

    context: nn.Module | None
    base: nn.Module
    flow: list[nn.Module]


@dataclass
class Parts:
    dequant: QParts | None
    augment: QParts | None
    then: list[nn.Module]  # bijections after dequantization, before the steps (shift, logit)
    steps: list[nn.Module] = field(default_factory=list)  # the main chain in forward order
    prior: nn.Module | None = None


def parts(model: nn.Module) -> Parts:
    """The parts of ``model`` in forward order."""
    def q(net) -> QParts | None:
        return None if net is None else QParts(net.context, net.base, list(net.flow.layers))

    return Parts(q(model.dequant_q), q(model.aug_q), list(model.then.layers), list(model.steps), model.prior)


def key_prefix(model: nn.Module):
    """module -> its state-dict prefix in ``model`` ('' for the model itself, else 'a.b.')."""
    names = {id(m): n for n, m in model.named_modules()}

    def prefix(m: nn.Module) -> str:
        n = names[id(m)]
        return n + "." if n else ""
    return prefix
