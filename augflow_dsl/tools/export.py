"""``augflow-dsl export MODEL_OR_SPEC --onnx FILE [--what log_prob|sample]``: ONNX export of a
compiled flow's log-likelihood or of its sampler (issue 13, part 6), checked with onnxruntime.

An ONNX graph cannot draw the same random numbers as torch, so each exported function is
deterministic, its noise an explicit input (docs/export.md):

* ``log_prob(x, noise...) -> log_prob [N]``: the forward plan (:meth:`FlowModel._forward_plan`,
  the one-sample ELBO when the model dequantizes or augments); one input per draw of a step
  that adds dims -- a uniform dequantizer's u ~ U[0, 1), a q-network base's epsilon ~ N(0, I)
  (variational dequantization, input augmentation), a cross-unit coupling's epsilon ~ N(0, I);
* ``sample(temperature, noise...) -> x [N, *data shape]``: the inverse plan
  (:meth:`FlowModel._inverse_plan`), fed with the prior's and each drop's standard-normal
  epsilon (scaled by ``temperature`` as ``model.sample`` does).

How: every draw of a step goes through :func:`~augflow_dsl.layers.base.draw`, so a
:class:`~augflow_dsl.layers.base.NoiseFeed` hands the steps the graph's inputs (one recorded
eager pass names them); values computed from the weights alone (the 1x1 convolutions' W^-1 and
log|det W|: ONNX has neither a matrix inverse nor a log-determinant) are folded into
initializers (:func:`frozen_weights`); the mixture coupling's Newton inverse becomes one
``torch.while_loop`` -- an ONNX Loop -- of at most 32 iterations
(:func:`~augflow_dsl.layers.mixture.newton_logit_fixed`); log_sigmoid gets a translation that
keeps its float32 tails (:func:`stable_translations`). A step that draws random numbers itself,
an op with no ONNX translation, or code torch.export cannot trace is refused with a message
naming the step, its op and the reason. The exporter is ``torch.onnx.export(..., dynamo=True)``
on a ``torch.export`` program (the TorchScript exporter cannot translate ``aten::diag``, which
the LU 1x1 convolution uses), with a dynamic batch dimension (``--static``: a fixed one).

After export the command runs the file with onnxruntime on fresh inputs (another batch size
when the batch is dynamic) and compares it with the eager torch model on the same inputs (its
normal path: the adaptive Newton solver): log_prob by the relative difference
|ort - torch| / max(1, |torch|) (a log-density of thousands of nats carries float32 rounding of
1e-4 in absolute terms), samples by the absolute difference; both within ``--tolerance`` (1e-4).
"""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WHAT = ("log_prob", "sample")
TOLERANCE = 1e-4


class ExportError(Exception):
    """A model that cannot be exported (the message names the step, the op and the reason), or a
    model file that cannot be read; ``code`` is the command's exit code (2: a usage error)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


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


# ---------------------------------------------------------------------------------- loading
def load_source(source: str, overrides: list[str] | None = None, seed: int = 0):
    """(model, where it came from): a ``.flow`` spec compiled with fresh weights drawn under
    ``seed`` (``overrides`` apply), a model saved by ``augflow-dsl compile --out``, or a run
    folder / checkpoint (EMA weights when present). Raises ExportError or SpecError."""
    import torch

    from ..compiler.model import compile_spec
    from ..runtime.checkpoint import CheckpointError
    from ..runtime.checkpoint import load_model as load_run

    p = Path(source)
    if not p.exists():
        raise FileNotFoundError(source)
    if p.is_file() and (p.suffix == ".flow" or _is_text(p)):
        from ..language.load import load
        torch.manual_seed(seed)
        return compile_spec(load(str(p), overrides or [])).eval(), f"spec {p} (fresh weights, seed {seed})"
    if overrides:
        raise ExportError(f"{p}: --set applies to a .flow spec only; a saved model carries its own spec", 2)
    if p.is_file():
        try:
            payload = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported, not dumped
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ExportError(f"{p}: neither a .flow spec nor a readable model file ({first[:200]})") from None
        if isinstance(payload, dict) and payload.get("format") == "augflow-dsl/1":
            from ..compiler.commands import load_model
            try:
                return load_model(p).eval(), f"saved model {p}"
            except Exception as e:  # noqa: BLE001
                raise ExportError(f"{p}: cannot rebuild the saved model: {e}") from None
    try:
        model, _, meta = load_run(p)
    except CheckpointError as e:
        raise ExportError(str(e)) from None
    return model.eval(), f"checkpoint {meta['path']} ({meta['weights']} weights)"


def _is_text(p: Path) -> bool:
    """A spec whatever its suffix: UTF-8 text (a torch.save file is a zip archive or a pickle)."""
    try:
        head = p.open("rb").read(1 << 16)
        head.decode()
    except (OSError, UnicodeDecodeError):
        return False
    return not head.startswith(b"PK") and "\x00" not in head.decode()


# ---------------------------------------------------------------------------------- graphs
def _step_names(model) -> dict[int, tuple[int, str, str]]:
    """id(module) -> (plan step, op name, module path) for every module inside a step."""
    from ..ops import registry
    out = {}
    for i, layer in enumerate(model.steps):
        try:
            op = registry.op_of_layer(type(layer)).name
        except KeyError:
            op = type(layer).__name__
        for name, m in layer.named_modules():
            out[id(m)] = (i, op, f"steps.{i}" + (f".{name}" if name else ""))
    return out


def _example_inputs(model, what: str, batch: int, seed: int):
    """(data-or-temperature input, recorded noise list) of one eager pass at ``batch``."""
    import torch

    from ..layers.base import NoiseFeed, feeding

    g = torch.Generator().manual_seed(seed)
    dtype = model._dtype()
    feed = NoiseFeed()
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed + 1)
        if what == "log_prob":
            if model.bits is not None:
                first = torch.randint(0, 2 ** model.bits, (batch, *model.data_shape), generator=g).to(dtype)
            else:
                first = torch.randn(batch, *model.data_shape, generator=g, dtype=dtype)
            with feeding(feed):
                model._forward_plan(first)
        else:
            first = torch.tensor(0.9, dtype=dtype)
            with feeding(feed), model._drawing(first):
                model._inverse_plan(batch)
    return first, feed.log


def noise_inputs(model, what: str, batch: int = 2, seed: int = 0) -> tuple[Any, list[NoiseInput]]:
    """The example first input and the noise inputs of ``what``, in draw order."""
    first, log = _example_inputs(model, what, batch, seed)
    names = _step_names(model)
    out = []
    for j, (owner, kind, t) in enumerate(log):
        step, op, module = names.get(id(owner), (-1, type(owner).__name__, "?"))
        out.append(NoiseInput(f"noise{j}_s{step}_{op}", kind, list(t.shape), step, op, module))
    return first, out


def _draw_noise(inputs: list[NoiseInput], batch: int, seed: int, dtype):
    import torch
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in inputs:
        shape = (batch, *n.shape[1:])
        out.append(torch.rand(shape, generator=g, dtype=dtype) if n.kind == "rand"
                   else torch.randn(shape, generator=g, dtype=dtype))
    return out


def _wrappers():
    import torch
    from torch import nn

    from ..layers.base import NoiseFeed, feeding

    class LogProb(nn.Module):
        """log_prob(x, noise...) of a FlowModel, its draws taken from the noise inputs."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor, *noise: torch.Tensor) -> torch.Tensor:
            with feeding(NoiseFeed(noise)):
                return self.model._forward_plan(x)

    class Sample(nn.Module):
        """sample(temperature, noise...) of a FlowModel: its inverse plan fed with the noise."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, temperature: torch.Tensor, *noise: torch.Tensor) -> torch.Tensor:
            with feeding(NoiseFeed(noise)), self.model._drawing(temperature):
                return self.model._inverse_plan(noise[0].shape[0])

    return LogProb, Sample


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
    from ..layers.mixture import EXPORT_ITERATIONS
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
    inputs += [{"name": n.name, "shape": [n_, *n.shape[1:]], "dtype": dtype, "meaning": n.describe(what == "sample")}
               for n in noise]
    output = {"name": names[-1], "shape": [n_] if what == "log_prob" else [n_, *model.data_shape],
              "dtype": dtype, "meaning": "log p(x) in nats (one-sample ELBO when the model augments or "
                                         "dequantizes)" if what == "log_prob" else "samples"}
    result = ExportResult(str(path), what, model.name, "N (dynamic)" if dynamic else str(batch), inputs, [output],
                          iters if what == "sample" and _has_iterative_inverse(model) else None,
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
    that draws its own random numbers is refused before tracing (:func:`_refuse_own_randomness`)."""
    import torch

    from ..layers.mixture import fixed_iterations

    LogProb, Sample = _wrappers()
    wrapper = (LogProb if what == "log_prob" else Sample)(model).eval()
    names = ["x" if what == "log_prob" else "temperature", *(n.name for n in noise),
             "log_prob" if what == "log_prob" else "x"]
    args = (first, *_draw_noise(noise, batch, seed, model._dtype()))
    with fixed_iterations(iters):
        ops, drew = ops_by_step(model, what, args)
    _refuse_own_randomness(model, what, drew)
    dyn = None
    if dynamic:
        n = torch.export.Dim("batch", min=1)
        dyn = ({0: n} if what == "log_prob" else None,)
        if noise:  # the wrappers' *noise is one (tuple) argument when given
            dyn += (tuple({0: n} for _ in noise),)
    try:
        with fixed_iterations(iters), _quiet():
            program = torch.export.export(wrapper, args, dynamic_shapes=dyn, strict=False)
    except Exception as e:  # noqa: BLE001 - translated into a message naming the step
        raise ExportError(f"cannot export {what}: torch.export cannot trace "
                          f"{_step_of_traceback(model, e) or 'the model'}: {_reason(e)}") from None
    try:
        with _quiet():
            torch.onnx.export(program, args, str(path), dynamo=True, input_names=names[:-1],
                              output_names=names[-1:], verbose=False, report=False,
                              custom_translation_table=stable_translations(),
                              external_data=_weight_bytes(model) > EMBED_LIMIT)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - translated into a message naming the op and the step
        raise ExportError(_conversion_failure(model, what, e, ops)) from None
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


# ---------------------------------------------------------------------------------- what each step calls
class _Tracker:
    """Which plan step is running: each step's ``forward`` and ``inverse`` wrapped (instance
    attributes, put back as they were on exit) to set ``current``."""

    _MISSING = object()

    def __init__(self, model):
        self.model, self.current, self.saved = model, -1, []

    def __enter__(self):
        for i, layer in enumerate(self.model.steps):
            for name in ("forward", "inverse"):
                self.saved.append((layer, name, layer.__dict__.get(name, self._MISSING)))
                setattr(layer, name, self._wrap(i, getattr(layer, name)))
        return self

    def _wrap(self, i: int, fn):
        def run(*a, **k):
            before, self.current = self.current, i
            try:
                return fn(*a, **k)
            finally:
                self.current = before
        return run

    def __exit__(self, *exc):
        for layer, name, old in reversed(self.saved):
            if old is self._MISSING:
                layer.__dict__.pop(name, None)
            else:
                layer.__dict__[name] = old
        self.saved.clear()
        return False


def ops_by_step(model, what: str, args) -> tuple[dict, dict]:
    """({aten op overload: plan steps that call it}, the same for the calls that drew random
    numbers) over one eager pass of ``what`` on ``args`` (first input, then the noise, fed: the
    steps that draw through :func:`~augflow_dsl.layers.base.draw` call no random op). A call
    drew when it advanced the CPU generator (an op tagged as seeded, such as attention, may
    not: its dropout is off in eval mode)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from ..layers.base import NoiseFeed, feeding

    ops: dict = {}
    drew: dict = {}
    seeded = torch.Tag.nondeterministic_seeded

    with _Tracker(model) as tracker:
        class Log(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, a=(), k=None):
                ops.setdefault(func, set()).add(tracker.current)
                if seeded not in func.tags:
                    return func(*a, **(k or {}))
                before = torch.get_rng_state()
                out = func(*a, **(k or {}))
                if not torch.equal(before, torch.get_rng_state()):
                    drew.setdefault(func, set()).add(tracker.current)
                return out

        # grad mode on, as under torch.export: weight caches recompute, so their ops are seen too
        with torch.enable_grad(), feeding(NoiseFeed(args[1:])), Log():
            if what == "log_prob":
                model._forward_plan(args[0])
            else:
                with model._drawing(args[0]):
                    model._inverse_plan(args[1].shape[0])
    return ops, drew


def _refuse_own_randomness(model, what: str, drew: dict) -> None:
    """A step that draws random numbers itself (not through ``draw``) would put a random-number
    generator into the graph: onnxruntime would draw its own noise, so the file is not a function
    of its inputs and cannot be checked against torch."""
    seeded = sorted((str(f), s) for f, s in drew.items())
    if seeded:
        op, steps = seeded[0]
        raise ExportError(f"cannot export {what}: {_describe_steps(model, steps)} draws random numbers itself "
                          f"({op}) instead of through augflow_dsl.layers.base.draw; in ONNX that noise would be "
                          f"drawn by the runtime, not given as an input, so the graph would not be a function of its "
                          f"inputs (route the draw through draw(self, kind, lambda: ...))")


def _describe_steps(model, steps) -> str:
    """'steps 1, 4, 7 (conv1x1, layer Conv1x1)', grouped by op and layer."""
    from ..ops import registry
    groups: dict[tuple[str, str], list[int]] = {}
    for i in sorted(s for s in steps if s >= 0):
        layer = model.steps[i]
        try:
            op = registry.op_of_layer(type(layer)).name
        except KeyError:
            op = "unregistered op"
        groups.setdefault((op, type(layer).__name__), []).append(i)
    parts = [f"step{'s' if len(ix) > 1 else ''} {', '.join(map(str, ix))} ({op}, layer {cls})"
             for (op, cls), ix in groups.items()]
    return "; ".join(parts) if parts else "the model outside its steps"


def _reason(e: BaseException) -> str:
    """The innermost cause's first line (the exporters wrap the real reason in advice)."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    return first[:400]


def _conversion_failure(model, what: str, e: BaseException, ops: dict) -> str:
    """The message for a traced graph that does not translate to ONNX: the aten op, the steps
    that call it, the reason."""
    import re
    text = "\n".join(str(c) for c in _chain(e))
    m = re.search(r"op='([\w.]+)'", text) or re.search(r"target=torch\.ops\.([\w.]+)", text)
    reason = _reason(e)
    if m is None:
        return f"cannot export {what}: the ONNX translation failed: {reason}"
    op = m.group(1).removesuffix(".default")
    base = op.split(".")[-1]
    steps = set()
    for f, s in ops.items():
        name = str(f).split(".")[1] if "." in str(f) else str(f)
        if name == base or base.startswith(name + "_") or name.startswith(base + "_"):
            steps |= s
    where = f", used by {_describe_steps(model, steps)}," if steps else ""
    return f"cannot export {what}: {op}{where} has no ONNX translation: {reason}"


def _chain(e: BaseException):
    while e is not None:
        yield e
        e = e.__cause__


class _FrozenCache:
    """Stands in for a module's :class:`~augflow_dsl.layers.linear.WeightCache` during export: each
    value derived from the weights alone (W, W^-1, log|det W|) is computed once from the real
    weights, as the eager cache does in no-grad evaluation, and served as a buffer of the module,
    so it becomes an ONNX initializer (ONNX has no matrix inverse or log-determinant op)."""

    def __init__(self):
        self.keys: dict[str, list[str]] = {}

    def get(self, module, name: str, compute):
        import torch
        if name not in self.keys:
            with torch.no_grad():
                value = compute()
            keys = []
            for j, t in enumerate(value):
                key = f"_export_{name}_{j}"
                module.register_buffer(key, t.detach().clone(), persistent=False)
                keys.append(key)
            self.keys[name] = keys
        return tuple(getattr(module, k) for k in self.keys[name])

    def clear(self) -> None:
        pass


@contextmanager
def frozen_weights(model):
    """Within, every module with a weight cache serves its derived weights as buffers."""
    from ..layers.linear import WeightCache
    saved = [(m, m.cache) for m in model.modules() if isinstance(getattr(m, "cache", None), WeightCache)]
    frozen = [(m, _FrozenCache()) for m, _ in saved]
    for m, f in frozen:
        m.cache = f
    try:
        yield
    finally:
        for (m, cache), (_, f) in zip(saved, frozen):
            m.cache = cache
            for keys in f.keys.values():
                for k in keys:
                    delattr(m, k)


def _has_iterative_inverse(model) -> bool:
    from ..layers.coupling import MixtureCoupling
    return any(isinstance(m, MixtureCoupling) for m in model.modules())


def verify_onnx(model, path: str | Path, what: str, names: list[str], noise: list[NoiseInput], batch: int,
                seed: int, tolerance: float = TOLERANCE) -> dict:
    """Run the file with onnxruntime and eager torch on the same fresh inputs (a batch size other
    than the export's, so the dynamic batch is exercised); the largest difference and whether it
    is within ``tolerance``."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from ..layers.base import NoiseFeed, feeding

    dtype = model._dtype()
    g = torch.Generator().manual_seed(seed)
    if what == "log_prob":
        if model.bits is not None:
            first = torch.randint(0, 2 ** model.bits, (batch, *model.data_shape), generator=g).to(dtype)
        else:
            first = torch.randn(batch, *model.data_shape, generator=g, dtype=dtype)
    else:
        first = torch.tensor(0.9, dtype=dtype)
    eps = _draw_noise(noise, batch, seed + 7, dtype)
    with torch.no_grad(), feeding(NoiseFeed(eps)):
        if what == "log_prob":
            ref = model._forward_plan(first)
        else:
            with model._drawing(first):
                ref = model._inverse_plan(batch)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        got = sess.run(None, {k: v.numpy() for k, v in zip(names, [first, *eps])})[0]
    except Exception as e:  # noqa: BLE001
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportError(f"onnxruntime cannot run {path}: {first_line[:300]}") from None
    ref, got = ref.double().numpy(), got.astype(np.float64)
    if got.shape != ref.shape:
        raise ExportError(f"onnxruntime returned shape {list(got.shape)} where torch returns {list(ref.shape)}")
    # torch's own non-finite values (a model that overflows at these inputs) must be matched
    # exactly; the figures are over the values finite in both
    same = bool(np.array_equal(np.isnan(got), np.isnan(ref))
                and np.array_equal(np.where(np.isinf(got), got, 0), np.where(np.isinf(ref), ref, 0)))
    finite = np.isfinite(got) & np.isfinite(ref)
    diff = np.abs(got - ref)[finite]
    out = {"batch": batch, "values": int(ref.size), "nonfinite_torch": int((~np.isfinite(ref)).sum()),
           "nonfinite_agree": same, "max_abs_diff": float(diff.max()) if diff.size else 0.0}
    if what == "log_prob":
        out["max_rel_diff"] = float((diff / np.maximum(1.0, np.abs(ref[finite]))).max()) if diff.size else 0.0
        out["measure"] = "max |ort - torch| / max(1, |torch|)"
        worst = out["max_rel_diff"]
    else:
        out["measure"] = "max |ort - torch|"
        worst = out["max_abs_diff"]
        if model.bits is not None:
            out["levels_differing"] = int((diff > 0.5).sum())
    out["tolerance"] = tolerance
    out["ok"] = bool(same and diff.size and worst <= tolerance)
    return out


# ---------------------------------------------------------------------------------- failures
def _step_of_traceback(model, e: BaseException) -> str:
    names = _step_names(model)
    found = None
    tb = e.__traceback__
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self")
        if obj is not None and id(obj) in names:
            found = names[id(obj)]
        tb = tb.tb_next
    if found is None:
        return ""
    i, op, module = found
    return f"step {i} ({op}, module {module})"


@contextmanager
def _quiet():
    """Silence the exporters' progress lines and reports (stdout, stderr: torch prints a traced
    graph when it meets a data-dependent branch), log records up to warnings and Python warnings:
    what matters comes back as a result or an exception, and the command reports it itself."""
    import contextlib
    import io
    import logging
    import warnings
    before = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(before)


# ---------------------------------------------------------------------------------- command
def add_command(sub, common) -> None:
    from ..cli.common import positive_int

    p = sub.add_parser("export", help="ONNX export of log_prob or sampling, checked with onnxruntime",
                       description="Export a model's log-likelihood or its sampler to ONNX, its noise as named "
                                   "inputs (docs/export.md), and check the file with onnxruntime against torch.")
    p.add_argument("source", metavar="MODEL_OR_SPEC",
                   help="a .flow spec (fresh weights under --seed), a model saved by 'compile --out', "
                        "or a run folder / checkpoint")
    p.add_argument("--onnx", required=True, metavar="FILE", help="the ONNX file to write")
    p.add_argument("--what", choices=WHAT, default="log_prob", help="the function to export (default log_prob)")
    p.add_argument("--batch", type=positive_int, default=2, metavar="N",
                   help="batch size traced (default 2); the file's batch dimension is dynamic unless --static")
    p.add_argument("--static", action="store_true",
                   help="export for exactly --batch examples (about twice as fast to export)")
    p.add_argument("--seed", type=int, default=0, help="seed of a spec's fresh weights and of the example inputs")
    p.add_argument("--newton-iterations", type=positive_int, default=None, metavar="N",
                   help="fixed Newton iterations of the mixture coupling's inverse in the file (default 32)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the onnxruntime check against torch")
    p.add_argument("--tolerance", type=_tolerance, default=TOLERANCE,
                   help="the check's bound: relative for log_prob, absolute for samples (default 1e-4)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: inputs, outputs, the check's figures (or error)")
    common(p)
    p.set_defaults(func=cmd_export)


def _tolerance(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0; got {text}")
    return v


def cmd_export(args) -> int:
    """Exit 0: exported (and, unless --no-verify, within tolerance); 1: not exportable, an
    unreadable model or spec, or the check failed; 2: usage (missing file or folder, --set on a
    saved model, the onnx packages not installed)."""
    from ..errors import SpecError

    def fail(message: str, code: int, prefix: bool = True) -> int:
        print(f"error: {message}" if prefix else message, file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "error": message, "exit": code}))
        return code

    if not Path(args.source).exists():
        return fail(f"no such model, run folder or spec: {args.source}", 2)
    out = Path(args.onnx)
    if out.is_dir() or not out.absolute().parent.is_dir():
        return fail(f"cannot write {out}: " + ("it is a folder" if out.is_dir() else
                                               f"no such folder {out.absolute().parent}"), 2)
    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if not _importable(m)]
    if missing:
        return fail(f"export needs {', '.join(missing)}: pip install 'augflow-dsl[onnx]'", 2)
    try:
        model, origin = load_source(args.source, args.set, args.seed)
        result = export_onnx(model, out, args.what, args.batch, args.seed, args.newton_iterations, args.verify,
                             args.tolerance, dynamic=not args.static)
    except ExportError as e:
        return fail(str(e), e.code)
    except SpecError as e:  # file:line:col messages, as every command prints them
        return fail(str(e), 1, prefix=False)
    except OSError as e:
        return fail(f"{e.filename or out}: {e.strerror or e}", 1)
    ok = result.verify is None or result.verify["ok"]
    if args.json:
        print(json.dumps({"ok": ok, "source": origin} | result.as_json()))
    else:
        _print(result, origin)
    if not ok:
        print(f"error: onnxruntime and torch differ by more than {args.tolerance:g} (the file is written)",
              file=sys.stderr)
    return 0 if ok else 1


def _importable(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


def _print(r: ExportResult, origin: str) -> None:
    print(f"{r.model}: {r.what} exported to {r.path} from {origin}")
    print(f"  ONNX opset {r.opset}, {r.nodes} nodes, batch {r.batch}"
          + (f"; weights in {r.weights_file}" if r.weights_file else "")
          + (f"; mixture-coupling inverse: {r.newton_iterations} fixed Newton iterations" if r.newton_iterations
             else ""))
    print("  inputs:")
    width = max(len(i["name"]) for i in r.inputs)
    for i in r.inputs:
        print(f"    {i['name']:<{width}}  [{', '.join(map(str, i['shape']))}]  {i['meaning']}")
    for o in r.outputs:
        print(f"  output: {o['name']}  [{', '.join(map(str, o['shape']))}]  {o['meaning']}")
    v = r.verify
    if v is None:
        print("  not checked (--no-verify)")
        return
    worst = v.get("max_rel_diff", v["max_abs_diff"])
    extra = f"; max |ort - torch| = {v['max_abs_diff']:.3g}" if "max_rel_diff" in v else ""
    levels = (f"; {v['levels_differing']} of {v['values']} values a level apart" if "levels_differing" in v
              else "")
    if v["nonfinite_torch"]:
        levels += (f"; {v['nonfinite_torch']} of {v['values']} values not finite in torch "
                   f"({'the same in' if v['nonfinite_agree'] else 'different from'} onnxruntime)")
    print(f"  onnxruntime vs torch on {v['batch']} fresh examples: {v['measure']} = {worst:.3g}{extra}{levels} "
          f"(tolerance {v['tolerance']:g}): {'ok' if v['ok'] else 'FAILED'}")
