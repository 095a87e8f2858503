"""The noise inputs of an exported graph: what each step draws, recorded in one eager pass, and fresh
draws of the same inputs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

@dataclass
class NoiseInput:
    """One noise input of an exported graph: its name, torch function (``rand``: U[0, 1),
    ``randn``: N(0, I)), shape (batch first) and the step that draws it."""

    name: str
    kind: str
    shape: list[int]
    step: int
    op: str
    module: str

    def describe(self, sampling: bool = False) -> str:
        law = "U[0, 1)" if self.kind == "rand" else "N(0, I)" + (" (times temperature)" if sampling else "")
        return f"{law} drawn by step {self.step} ({self.op}, module {self.module})"



# ---------------------------------------------------------------------------------- graphs
def step_names(model) -> dict[int, tuple[int, str, str]]:
    """id(module) -> (plan step, op name, module path) for every module inside a step."""
    from ...layers.registry import op_of
    out = {}
    for i, layer in enumerate(model.steps):
        try:
            op = op_of(type(layer)).name
        except KeyError:
            op = type(layer).__name__
        for name, m in layer.named_modules():
            out[id(m)] = (i, op, f"steps.{i}" + (f".{name}" if name else ""))
    return out


def draw_condition(model, batch: int, seed: int):
    """``batch`` conditions y of a conditional model, seeded (None for an unconditional one): labels
    drawn uniformly in 0..K-1 (int64 [N]), or context vectors from N(0, I) (float [N, D])."""
    if not getattr(model, "conditional", False):
        return None
    import torch
    g = torch.Generator().manual_seed(seed + 12345)
    c = model.condition
    if c.classes is not None:
        return torch.randint(0, c.classes, (batch,), generator=g, dtype=torch.int64)
    return torch.randn(batch, c.vector, generator=g, dtype=model._dtype())


def condition_input(model, batch) -> dict | None:
    """The ``inputs`` entry of y in an :class:`~.trace.ExportResult` (None for an unconditional model)."""
    if not getattr(model, "conditional", False):
        return None
    c = model.condition
    if c.classes is not None:
        return {"name": "y", "shape": [batch], "dtype": "int64", "meaning": f"class labels 0..{c.classes - 1} (int64)"}
    return {"name": "y", "shape": [batch, c.vector], "dtype": str(model._dtype()).removeprefix("torch."),
            "meaning": f"context vectors [{c.vector}]"}


def split_inputs(model, inputs) -> tuple:
    """(y, noise) of a graph's inputs after the first: y leads for a conditional model."""
    inputs = tuple(inputs)
    return (inputs[0], inputs[1:]) if getattr(model, "conditional", False) else (None, inputs)


def plan_pass(model, what: str, first, y, n: int, traced: bool = False):
    """One eager pass of ``what`` -- the one every export stage runs (recording the noise, looking for
    random ops, tracing, the torch side of the check): log_prob, the forward plan on ``first`` (x); sample,
    the inverse plan of ``n`` examples at temperature ``first``; given y when the model is conditional
    (``traced``: y is a traced graph input, see ``FlowModel._given``)."""
    if what == "log_prob":
        with model._given(y, n, first, traced=traced):
            return model._forward_plan(first)
    with model._drawing(first), model._given(y, n, model._like(), repeat=True, traced=traced):
        return model._inverse_plan(n)


def _example_inputs(model, what: str, batch: int, seed: int):
    """(data-or-temperature input, recorded noise list) of one eager pass at ``batch``, conditioned on
    :func:`draw_condition`'s y when the model is conditional."""
    import torch

    from ...layers.base import NoiseFeed, feeding

    g = torch.Generator().manual_seed(seed)
    dtype = model._dtype()
    feed = NoiseFeed()
    y = draw_condition(model, batch, seed)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed + 1)
        if what == "log_prob":
            if model.bits is not None:
                first = torch.randint(0, 2 ** model.bits, (batch, *model.data_shape), generator=g).to(dtype)
            else:
                first = torch.randn(batch, *model.data_shape, generator=g, dtype=dtype)
        else:
            first = torch.tensor(0.9, dtype=dtype)
        with feeding(feed):
            plan_pass(model, what, first, y, batch)
    return first, feed.log


def noise_inputs(model, what: str, batch: int = 2, seed: int = 0) -> tuple[Any, list[NoiseInput]]:
    """The example first input and the noise inputs of ``what``, in draw order."""
    first, log = _example_inputs(model, what, batch, seed)
    names = step_names(model)
    out = []
    for j, (owner, kind, t) in enumerate(log):
        step, op, module = names.get(id(owner), (-1, type(owner).__name__, "?"))
        out.append(NoiseInput(f"noise{j}_s{step}_{op}", kind, list(t.shape), step, op, module))
    return first, out


def draw_noise(inputs: list[NoiseInput], batch: int, seed: int, dtype):
    import torch
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in inputs:
        shape = (batch, *n.shape[1:])
        out.append(torch.rand(shape, generator=g, dtype=dtype) if n.kind == "rand"
                   else torch.randn(shape, generator=g, dtype=dtype))
    return out

