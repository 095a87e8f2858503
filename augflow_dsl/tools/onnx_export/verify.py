"""Verification: the ONNX file run with onnxruntime on the model's own samples (log_prob) or fresh
noise (sample) and compared with torch, the weights' derived matrices frozen as initializers for both."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from .diagnosis import ExportError
from .noise import NoiseInput, draw_condition, draw_noise, plan_pass

TOLERANCE = 1e-4  # the check's bound: relative for log_prob, absolute for samples

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
    from ...layers.linear import WeightCache
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


def has_iterative_inverse(model) -> bool:
    from ...layers.coupling import MixtureCoupling
    return any(isinstance(m, MixtureCoupling) for m in model.modules())


def data_like(model, batch: int, seed: int, dtype, y=None) -> tuple:
    """``batch`` inputs at which the model's log-density is typical, and what they are: its own
    samples (levels for discrete data; given ``y``, one per row of y for a conditional model), drawn
    under a forked RNG. Uniform random images are not: a trained model gives them log p of about
    -1e10, where a relative check passes an absolute error of 3e4 nats (issue 24). Random inputs
    only when the samples are not finite."""
    import torch
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        x = (model.sample(batch) if y is None else model.sample(batch, y=y)).to(dtype)
    if bool(torch.isfinite(x).all()):
        return x, "model samples"
    g = torch.Generator().manual_seed(seed)
    if model.bits is not None:
        x = torch.randint(0, 2 ** model.bits, (batch, *model.data_shape), generator=g).to(dtype)
    else:
        x = torch.randn(batch, *model.data_shape, generator=g, dtype=dtype)
    return x, "random inputs (the model's samples are not finite)"


def verify_onnx(model, path: str | Path, what: str, names: list[str], noise: list[NoiseInput], batch: int,
                seed: int, tolerance: float = TOLERANCE) -> dict:
    """Run the file with onnxruntime and eager torch on the same inputs (a batch size other than
    the export's, so the dynamic batch is exercised): for log_prob the model's own samples
    (:func:`data_like`), compared by the relative error |ort - torch| / max(1, |torch|); for
    sampling fresh noise, compared by the absolute error. A conditional model's y (``names[1]``) is
    drawn fresh (:func:`~.noise.draw_condition`) and the samples are drawn given it. The figures and
    whether the worst is within ``tolerance``."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from ...layers.base import NoiseFeed, feeding

    dtype = model._dtype()
    inputs = "fresh noise draws"
    y = draw_condition(model, batch, seed)
    if what == "log_prob":
        first, inputs = data_like(model, batch, seed, dtype, y)
    else:
        first = torch.tensor(0.9, dtype=dtype)
    if y is not None:
        inputs += f" given {'labels' if model.condition.classes is not None else 'context vectors'} y"
    eps = draw_noise(noise, batch, seed + 7, dtype)
    with torch.no_grad(), feeding(NoiseFeed(eps)):
        ref = plan_pass(model, what, first, y, batch)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        got = sess.run(None, {k: v.numpy() for k, v in zip(names, [first, *([y] if y is not None else []), *eps])})[0]
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
    out = {"batch": batch, "inputs": inputs, "values": int(ref.size), "nonfinite_torch": int((~np.isfinite(ref)).sum()),
           "nonfinite_agree": same, "max_abs_diff": float(diff.max()) if diff.size else 0.0}
    if what == "log_prob":
        out["max_rel_diff"] = float((diff / np.maximum(1.0, np.abs(ref[finite]))).max()) if diff.size else 0.0
        out["measure"] = "relative error max |ort - torch| / max(1, |torch|)"
        worst = out["max_rel_diff"]
    else:
        out["measure"] = "max |ort - torch|"
        worst = out["max_abs_diff"]
        if model.bits is not None:
            out["levels_differing"] = int((diff > 0.5).sum())
    out["tolerance"] = tolerance
    out["ok"] = bool(same and diff.size and worst <= tolerance)
    return out


