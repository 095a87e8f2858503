"""Tracing: the model's ``log_prob`` or sampler wrapped with its noise as inputs, ``torch.export``,
then the ONNX translation; the file's inputs and outputs described (:class:`ExportResult`)."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from .diagnosis import (ExportError, conversion_failure, failure_reason, ops_by_step, quiet, refuse_own_randomness,
                        step_of_traceback)
from .noise import NoiseInput, condition_input, draw_condition, draw_noise, noise_inputs, plan_pass, split_inputs
from .verify import TOLERANCE, frozen_weights, has_iterative_inverse, verify_onnx

WHAT = ("log_prob", "sample")

@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and measured; ``as_json`` is ``--json``'s object."""

    path: str
    what: str
    model: str
    batch: str
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    newton_iterations: int | None = None
    opset: int | None = None
    nodes: int = 0
    weights_file: str | None = None  # the external-data file beside a model over EMBED_LIMIT, else None
    verify: dict | None = None

    def as_json(self) -> dict:
        return self.__dict__.copy()


def _wrapper(model, what: str):
    """``what`` of a FlowModel as a module of its graph inputs: (x or temperature, [y,] noise...), its
    draws taken from the noise inputs and a conditional model's y held for the pass, so the
    condition's embedding is computed in the graph (:func:`~.noise.plan_pass`, traced)."""
    from torch import nn

    from ...layers.base import NoiseFeed, feeding

    class Pass(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, first, *inputs):
            y, noise = split_inputs(self.model, inputs)
            n = (first if what == "log_prob" else noise[0]).shape[0]
            with feeding(NoiseFeed(noise)):
                return plan_pass(self.model, what, first, y, n, traced=y is not None)

    return Pass().eval()


def export_onnx(model, path: str | Path, what: str = "log_prob", batch: int = 2, seed: int = 0,
                newton_iterations: int | None = None, verify: bool = True, tolerance: float = TOLERANCE,
                dynamic: bool = True, fold: bool = True) -> ExportResult:
    """Export ``model``'s ``what`` to ONNX at ``path``; with ``verify``, run it with onnxruntime on
    fresh inputs and compare with torch (see the module docstring). ``fold``: the weights' derived
    matrices become initializers (:func:`frozen_weights`; without it the LU / full 1x1
    convolutions' inverse and log-determinant stay in the graph, which ONNX cannot express).
    ``dynamic``: a dynamic batch dimension, else the graph takes exactly ``batch`` examples.
    Raises ExportError."""
    import onnx

    if what not in WHAT:
        raise ExportError(f"what must be one of {', '.join(WHAT)}; got {what!r}")
    from ...layers.mixture import EXPORT_ITERATIONS
    model = model.eval()
    iters = EXPORT_ITERATIONS if newton_iterations is None else newton_iterations
    path = Path(path)
    with frozen_weights(model) if fold else nullcontext():
        first, noise = noise_inputs(model, what, batch, seed)
        if what == "sample" and not noise:
            raise ExportError("this model draws no noise when sampling: there is nothing to feed its inverse")
        names = _trace(model, path, what, first, noise, batch, seed, iters, dynamic)
    proto = onnx.load(str(path), load_external_data=False)
    n_ = "N" if dynamic else batch
    dtype = str(model._dtype()).removeprefix("torch.")
    data = f"data (integers 0 .. {2 ** model.bits - 1}, as floats)" if model.bits else "data"
    inputs = [{"name": names[0], "shape": [n_, *model.data_shape] if what == "log_prob" else [],
               "dtype": dtype, "meaning": data if what == "log_prob" else "sampling temperature (scalar > 0)"}]
    inputs += [c for c in [condition_input(model, n_)] if c]
    inputs += [{"name": n.name, "shape": [n_, *n.shape[1:]], "dtype": dtype, "meaning": n.describe(what == "sample")}
               for n in noise]
    output = {"name": names[-1], "shape": [n_] if what == "log_prob" else [n_, *model.data_shape],
              "dtype": dtype, "meaning": "log p(x) in nats (one-sample ELBO when the model augments or "
                                         "dequantizes)" if what == "log_prob" else "samples"}
    result = ExportResult(str(path), what, model.name, "N (dynamic)" if dynamic else str(batch), inputs, [output],
                          iters if what == "sample" and has_iterative_inverse(model) else None,
                          next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
                          len(proto.graph.node))
    if _weight_bytes(model) > EMBED_LIMIT:
        result.weights_file = f"{path}.data"
    if verify:
        result.verify = verify_onnx(model, path, what, names[:-1], noise, batch=batch + 3 if dynamic else batch,
                                    seed=seed + 1, tolerance=tolerance)
    return result


def _trace(model, path: Path, what: str, first, noise: list[NoiseInput], batch: int, seed: int, iters: int,
           dynamic: bool) -> list[str]:
    """torch.export (non-strict) of the wrapper of ``what``, then its ONNX translation
    (``torch.onnx.export(..., dynamo=True)``) to ``path``; the input and output names. A step
    that draws its own random numbers is refused before tracing (:func:`refuse_own_randomness`)."""
    import torch

    from ...layers.mixture import fixed_iterations

    wrapper = _wrapper(model, what)
    y = draw_condition(model, batch, seed)
    names = ["x" if what == "log_prob" else "temperature", *(["y"] if y is not None else []),
             *(n.name for n in noise), "log_prob" if what == "log_prob" else "x"]
    args = (first, *([y] if y is not None else []), *draw_noise(noise, batch, seed, model._dtype()))
    with fixed_iterations(iters):
        ops, drew = ops_by_step(model, what, args)
    refuse_own_randomness(model, what, drew)
    dyn = None
    if dynamic:
        n = torch.export.Dim("batch", min=1)
        dyn = ({0: n} if what == "log_prob" else None,)
        if len(args) > 1:  # the wrappers' *inputs (y, noise) are one (tuple) argument when given
            dyn += (tuple({0: n} for _ in args[1:]),)
    try:
        with fixed_iterations(iters), quiet():
            program = torch.export.export(wrapper, args, dynamic_shapes=dyn, strict=False)
    except Exception as e:  # noqa: BLE001 - translated into a message naming the step
        raise ExportError(f"cannot export {what}: torch.export cannot trace "
                          f"{step_of_traceback(model, e) or 'the model'}: {failure_reason(e)}") from None
    try:
        with quiet():
            torch.onnx.export(program, args, str(path), dynamo=True, input_names=names[:-1],
                              output_names=names[-1:], verbose=False, report=False,
                              custom_translation_table=stable_translations(),
                              external_data=_weight_bytes(model) > EMBED_LIMIT)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - translated into a message naming the op and the step
        raise ExportError(conversion_failure(model, what, e, ops)) from None
    return names


EMBED_LIMIT = 1 << 30  # weights up to 1 GiB live inside the .onnx file (protobuf's limit is 2 GiB)


def _weight_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def stable_translations() -> dict:
    """ONNX translations that keep the float32 tails, replacing torchlib's: log_sigmoid is
    translated as Log(Sigmoid(x)), which onnxruntime evaluates to -inf below x = -30 or so (its
    Sigmoid flushes to 0) -- the mixture CDF's tails, so log_prob became NaN; here it is
    -Softplus(-x), exact in onnxruntime over the whole float32 range."""
    import torch
    from onnxscript import opset18 as op

    def log_sigmoid(x):
        return op.Neg(op.Softplus(op.Neg(x)))

    return {torch.ops.aten.log_sigmoid.default: log_sigmoid}

