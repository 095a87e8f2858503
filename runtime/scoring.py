"""Bits per dimension of a compiled flow on a data set: one-sample ELBO and importance-weighted.

For a flow with dequantization or augmentation, ``log_prob`` is a one-sample lower bound
log p(x) >= E_q[log p(x, v) - log q(v | x)] (Flow++ eq. 12, VFlow eq. 4); the importance-weighted
estimate log (1/S) sum_s p(x, v_s) / q(v_s | x) (VFlow eq. 5, DenseFlow eq. 20) tightens it as S
grows. bits/dim = -log p(x) / (D ln 2), D the data dims (augmented dims are not counted).

Memory is bounded by ``batch``: every forward pass reads at most ``batch`` examples, whatever S
is. With S > batch one example is evaluated at a time, its S samples streamed ``batch`` at a
time through ``FlowModel.log_likelihood`` and combined exactly in float64:
log mean_S w = logsumexp_k(log mean_{S_k} w + log S_k) - log S.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Protocol, Sequence

import torch
from torch.utils.data import Dataset

from . import batches

#: progress(done, total, stats): ``done``/``total`` count examples-times-samples forwarded, so
#: a bar moves steadily even when one example takes thousands of forward passes; ``stats`` has
#: ``loss`` (running mean nats per example, ELBO), ``bpd`` (running mean ELBO bits/dim),
#: ``iw_bpd`` (running mean importance-weighted bits/dim, or None) and ``images_per_s``.
Progress = Callable[[int, int, dict], None]


class _Model(Protocol):  # what evaluate reads of a FlowModel
    dims: int

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor: ...

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor | None = None, samples: int = 1,
                       chunk: int | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class EvalResult:
    """Mean bits/dim over ``n`` examples with their standard errors (std / sqrt(n))."""

    n: int
    dims: int
    samples: int
    elbo_bpd: float
    elbo_se: float
    iw_bpd: float | None  # None when samples == 1 (the estimate is the ELBO itself)
    iw_se: float | None
    seconds: float
    images_per_s: float  # examples forwarded per second, IW samples included

    def as_dict(self) -> dict:
        return asdict(self)


def _batches(data: Dataset | torch.Tensor, batch: int, limit: int | None) -> tuple[Iterator[torch.Tensor], int]:
    """Fixed-order batches of the first ``limit`` items (all when None) and their number."""
    if isinstance(data, tuple):  # (x, y): images and their labels (or context vectors)
        x, y = data
        n = len(x) if limit is None else min(len(x), limit)
        return ((x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)), n
    n = len(data) if limit is None else min(len(data), limit)
    if isinstance(data, torch.Tensor):
        return (data[i:i + batch] for i in range(0, n, batch)), n
    return (fetch(data, range(i, min(i + batch, n))) for i in range(0, n, batch)), n


def fetch(data: Dataset, indices: Sequence[int]) -> torch.Tensor:
    """Items ``indices`` of a Dataset of single tensors, stacked; a dataset's own batched read
    (``__getitems__``, which may return the stacked tensor itself) is used when it has one."""
    many = getattr(data, "__getitems__", None)
    items = many(list(indices)) if many is not None else [data[i] for i in indices]
    if isinstance(items, torch.Tensor) or (isinstance(items, tuple) and len(items) == 2
                                           and all(isinstance(t, torch.Tensor) for t in items)):
        return items  # already one batch: x, or (x, y)
    return batches.stack(items)


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    v = values.double()
    se = float(v.std(unbiased=True) / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")
    return float(v.mean()), se


def _iw(model: _Model, x: torch.Tensor, y: torch.Tensor | None, samples: int) -> torch.Tensor:
    """One call of the model's importance-weighted estimate (y only for a conditional model)."""
    if y is None:
        return model.log_likelihood(x, samples=samples, chunk=samples)
    return model.log_likelihood(x, y, samples=samples, chunk=samples)


def iw_log_likelihood(model: _Model, x: torch.Tensor, samples: int, batch: int,
                      on_forward: Callable[[int], None] | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
    """Importance-weighted log p(x) [N] (float64) with at most ``batch`` examples per forward pass.

    Groups of max(1, batch // samples) examples take all S samples in one call; with S > batch
    each example's samples go ``batch`` at a time and the partial means are combined exactly.
    ``on_forward(k)`` is called after each pass with the number of examples it read."""
    out = []
    group = max(1, batch // samples)
    for i in range(0, x.shape[0], group):
        xs = x[i:i + group]
        ys = None if y is None else y[i:i + group]
        n = xs.shape[0]
        if samples * n <= batch:
            out.append(_iw(model, xs, ys, samples).double())
            if on_forward:
                on_forward(samples * n)
            continue
        acc, done = None, 0  # n == 1 here
        while done < samples:
            k = min(batch, samples - done)
            part = _iw(model, xs, ys, k).double() + math.log(k)
            acc = part if acc is None else torch.logaddexp(acc, part)
            done += k
            if on_forward:
                on_forward(k)
        out.append(acc - math.log(samples))
    return torch.cat(out)


def evaluate(model: torch.nn.Module, data: Dataset | torch.Tensor, *, samples: int = 1, batch: int = 64,
             limit: int | None = None, seed: int | None = 0, device: str | torch.device | None = None,
             progress: Progress | None = None) -> EvalResult:
    """Bits/dim of ``model`` on ``data`` (a Dataset of single tensors, or a tensor [N, ...]).

    The model runs in eval mode under no_grad (its mode is restored afterwards); batches go to
    ``device`` (default: the device of the model's parameters). ``samples`` > 1 adds the
    importance-weighted estimate with S samples; ``batch`` bounds the examples per forward pass;
    ``limit`` evaluates the first ``limit`` items; ``seed`` fixes the dequantization /
    augmentation noise without touching the global generator (None: draw from it)."""
    if samples < 1 or batch < 1:
        raise ValueError(f"evaluate needs samples >= 1 and batch >= 1; got samples={samples}, batch={batch}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1; got {limit}")
    if len(data[0] if isinstance(data, tuple) else data) == 0:
        raise ValueError("evaluate needs at least one example; the data set is empty")
    device = torch.device(device) if device is not None else \
        next((p.device for p in model.parameters()), torch.device("cpu"))
    dims = int(model.dims)
    scale = 1.0 / (dims * math.log(2))
    it, n = _batches(data, batch, limit)
    total = n * (1 + (samples if samples > 1 else 0))
    elbo: list[torch.Tensor] = []
    iw: list[torch.Tensor] = []
    sums = {"elbo": 0.0, "n_elbo": 0, "iw": 0.0, "n_iw": 0, "done": 0}
    start = time.perf_counter()

    def tick(k: int) -> None:
        sums["done"] += k
        if progress is not None:
            e = sums["elbo"] / max(sums["n_elbo"], 1)
            stats = {"loss": -e, "bpd": -e * scale,
                     "iw_bpd": -sums["iw"] / sums["n_iw"] * scale if sums["n_iw"] else None,
                     "images_per_s": sums["done"] / max(time.perf_counter() - start, 1e-9)}
            progress(sums["done"], total, stats)

    was_training = model.training
    model.eval()
    forked = torch.random.fork_rng(devices=[device] if device.type == "cuda" else []) if seed is not None \
        else contextlib.nullcontext()
    try:
        with forked, torch.no_grad():
            if seed is not None:
                torch.manual_seed(seed)
            for b in it:
                x, y = batches.split(batches.to(b, device))
                y = y if getattr(model, "conditional", False) else None
                lp = (model.log_prob(x) if y is None else model.log_prob(x, y)).double().cpu()
                elbo.append(lp)
                sums["elbo"] += float(lp.sum())
                sums["n_elbo"] += lp.numel()
                tick(x.shape[0])
                if samples > 1:
                    ll = iw_log_likelihood(model, x, samples, batch, tick, y=y).cpu()
                    iw.append(ll)
                    sums["iw"] += float(ll.sum())
                    sums["n_iw"] += ll.numel()
                    tick(0)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    e_mean, e_se = _mean_se(-torch.cat(elbo) * scale)
    i_mean, i_se = _mean_se(-torch.cat(iw) * scale) if iw else (None, None)
    return EvalResult(n=n, dims=dims, samples=samples, elbo_bpd=e_mean, elbo_se=e_se, iw_bpd=i_mean, iw_se=i_se,
                      seconds=seconds, images_per_s=sums["done"] / max(seconds, 1e-9))
