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
    """The parts of ``model`` in forward order. The model's plan is one list of steps (the step
    protocol): [dequantizer, its ``then`` bijections, input augment point, the chain..., prior];
    the dequantizer and the augment point carry their q-networks as ``.q``."""
    from ..layers.augment import InputAugment
    from ..layers.dequantize import Uniform

    def q(net) -> QParts | None:
        return None if net is None else QParts(net.context, net.base, list(net.flow.layers))

    layers = list(model.steps)
    i, dequant, n_then = 0, None, 0
    if layers and isinstance(layers[0], Uniform):
        dequant = q(getattr(layers[0], "q", None))
        spec_dq = getattr(model, "spec", None) and model.spec.dequantize
        n_then = len(spec_dq.args.then) if spec_dq is not None else 0
        i = 1
    then = layers[i:i + n_then]
    i += n_then
    augment = None
    if i < len(layers) and isinstance(layers[i], InputAugment):
        augment = q(layers[i].q)
        i += 1
    return Parts(dequant, augment, then, layers[i:-1], layers[-1] if layers else None)


def key_prefix(model: nn.Module):
    """module -> its state-dict prefix in ``model`` ('' for the model itself, else 'a.b.')."""
    names = {id(m): n for n, m in model.named_modules()}

    def prefix(m: nn.Module) -> str:
        n = names[id(m)]
        return n + "." if n else ""
    return prefix
