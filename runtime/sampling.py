"""Drawing samples from a compiled flow and writing them: an image grid PNG, a scatter plot PNG for
vector data, an .npz file of the raw values.

A FlowModel's samples of integer data are already quantized to the data's levels
0 .. 2^bits - 1 (``FlowModel._from_model_space``); vector data comes back as real numbers.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch

#: progress(done, total): samples drawn so far out of all requested.
SampleProgress = Callable[[int, int], None]


def condition_for(model: torch.nn.Module, n: int, *, label: int | None = None, labels=None,
                  context=None) -> torch.Tensor | None:
    """The y of ``n`` samples of a conditional model: one ``label`` for all, ``labels`` repeated in
    turn (0, 1, 2, 0, 1, 2, ...), or one ``context`` vector for all; a class-conditional model given
    none cycles through every class (balanced). None for an unconditional model, which refuses any."""
    cond = getattr(model, "condition", None) if getattr(model, "conditional", False) else None
    given = [k for k, v in (("label", label), ("labels", labels), ("context", context)) if v is not None]
    if cond is None:
        if given:
            raise ValueError(f"'{model.name}' is unconditional: --{given[0]} applies only to a conditional model")
        return None
    if len(given) > 1:
        raise ValueError("give one of a label, a list of labels or a context vector")
    if cond.classes is not None:
        if context is not None:
            raise ValueError(f"'{model.name}' is conditioned on labels 0..{cond.classes - 1}, not on a context vector")
        seq = [label] if label is not None else list(labels) if labels is not None else list(range(cond.classes))
        bad = [k for k in seq if not 0 <= int(k) < cond.classes]
        if bad or not seq:
            raise ValueError(f"labels must lie in 0..{cond.classes - 1}; got {bad or 'none'}")
        return torch.tensor(seq, dtype=torch.long).repeat(-(-n // len(seq)))[:n]
    if context is None:
        raise ValueError(f"'{model.name}' is conditioned on a context vector of {cond.vector}: give one")
    v = torch.as_tensor(context, dtype=torch.float32).reshape(-1)
    if v.numel() != cond.vector:
        raise ValueError(f"the context vector needs {cond.vector} values; got {v.numel()}")
    return v.expand(n, -1).clone()


def class_rows(model: torch.nn.Module, classes: int, per: int) -> torch.Tensor:
    """The labels of a grid with one row per class: classes 0 .. ``classes`` - 1, ``per`` samples each,
    row by row (class k repeated ``per`` times, then k + 1)."""
    return condition_for(model, classes * per, labels=range(classes)).view(per, classes).T.reshape(-1)


def generate(model: torch.nn.Module, n: int, *, temperature: float = 1.0, batch: int = 64, seed: int | None = None,
             progress: SampleProgress | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` samples on the CPU, drawn ``batch`` at a time (memory bounded by ``batch``), the model
    in eval mode (restored afterwards). ``seed`` fixes the draw without touching the global
    generator; None uses it. ``y``: the condition of each sample ([n] labels or [n, D]) for a
    conditional model (:func:`condition_for` makes one)."""
    if n < 1 or batch < 1 or not temperature > 0:
        raise ValueError(f"sampling needs n >= 1, batch >= 1 and temperature > 0; got n={n}, batch={batch}, "
                         f"temperature={temperature}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            done = 0
            while done < n:
                k = min(batch, n - done)
                if y is None:
                    out.append(model.sample(k, temperature).cpu())
                else:
                    out.append(model.sample(k, temperature, y=y[done:done + k].to(device)).cpu())
                done += k
                if progress is not None:
                    progress(done, n)
    finally:
        model.train(was_training)
    return torch.cat(out)


def top_level(bits: int, dataset: str | None = None) -> int:
    """The level drawn white in a picture: the data set's largest value (language.datasets'
    facts: digits 16, stored in 5 bits), else 2^bits - 1. Digits scaled by 31 looked dim (issue 24)."""
    from ..language.datasets import DATASETS

    top = 2 ** bits - 1
    facts = DATASETS.get(dataset or "")
    return min(top, facts.max_value) if facts is not None and facts.max_value else top


def to_unit(x: torch.Tensor, bits: int | None, top: int | None = None) -> torch.Tensor:
    """Integer levels 0 .. ``top`` (default 2^bits - 1) -> [0, 1] (float32), the range save_image
    expects; real images (``bits`` None) are scaled by their own minimum and maximum."""
    x = x.float()
    if bits is None:
        lo, hi = x.min(), x.max()
        return (x - lo) / (hi - lo).clamp_min(1e-12)
    return (x / (top or 2 ** bits - 1)).clamp(0, 1)


def to_uint8(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer levels 0 .. 2^bits - 1 -> uint8 0 .. 255 (level k -> round(255 k / (2^bits - 1)))."""
    return torch.round(to_unit(x, bits) * 255).to(torch.uint8)


def save_grid(samples: torch.Tensor, path: str | Path, bits: int | None, nrow: int | None = None,
              upscale: int | None = None, top: int | None = None) -> None:
    """Write images [N, C, H, W] (levels 0 .. 2^bits - 1; C = 1 or 3) as one PNG grid with
    torchvision's make_grid / save_image, level ``top`` (default 2^bits - 1; :func:`top_level`
    gives the data set's) drawn white; ``nrow`` images per row (default: a near-square grid);
    each pixel drawn as an ``upscale`` x ``upscale`` block (default: enough for images of at
    least 32 pixels, so 8 x 8 digits stay visible)."""
    import torch.nn.functional as F
    from torchvision.utils import make_grid, save_image
    if samples.dim() != 4 or samples.shape[1] not in (1, 3):
        raise ValueError(f"a grid needs images [N, 1 or 3, H, W]; got {list(samples.shape)}")
    nrow = nrow or max(1, math.ceil(math.sqrt(samples.shape[0])))
    upscale = upscale or max(1, math.ceil(32 / min(samples.shape[-2:])))
    x = to_unit(samples, bits, top)
    if upscale > 1:
        x = F.interpolate(x, scale_factor=upscale, mode="nearest")
    save_image(make_grid(x, nrow=nrow, padding=2, pad_value=1.0), str(path))


def save_scatter(points: torch.Tensor, path: str | Path, reference: torch.Tensor | None = None,
                 title: str | None = None) -> None:
    """Write vector samples [N, D] (D >= 2; dims 0 and 1 are drawn) as a scatter-plot PNG with
    matplotlib (Agg backend, no display needed); ``reference`` points (e.g. test data) are drawn
    beside them in a second panel with the same axes."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if points.dim() != 2 or points.shape[1] < 2:
        raise ValueError(f"a scatter plot needs vectors [N, D] with D >= 2; got {list(points.shape)}")
    panels = [("samples", points)] + ([("data", reference)] if reference is not None else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.5), squeeze=False)
    everything = torch.cat([p[:, :2].float() for _, p in panels])
    lo, hi = everything.quantile(0.001, 0).tolist(), everything.quantile(0.999, 0).tolist()
    size = max(0.5, min(8.0, 2000.0 / points.shape[0]))
    for ax, (name, p) in zip(axes[0], panels):
        p = p.float().numpy()
        ax.scatter(p[:, 0], p[:, 1], s=size, alpha=0.6, linewidths=0)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(f"{name} ({len(p):,})")
        ax.set_xlabel("x[0]")
        ax.set_ylabel("x[1]")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    plt.close(fig)


def save_samples(model: torch.nn.Module, path: str | Path, n: int = 64, *, temperature: float = 1.0,
                 batch: int = 64, seed: int | None = None, reference: torch.Tensor | None = None) -> torch.Tensor:
    """Draw ``n`` samples and write them to the PNG ``path`` (folders made as needed): a grid for
    image data, a scatter plot (beside ``reference`` points when given) for vector data.
    Returns the samples."""
    y = None
    cond = getattr(model, "condition", None) if getattr(model, "conditional", False) else None
    if cond is not None and cond.classes is not None:  # one row per class (up to 10 classes, n // classes each)
        k = min(cond.classes, 10)
        per = max(1, n // k)
        y = class_rows(model, k, per)
    elif cond is not None:
        y = condition_for(model, n, context=torch.zeros(cond.vector))
    x = generate(model, len(y) if y is not None else n, temperature=temperature, batch=batch, seed=seed, y=y)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if x.dim() == 4:
        save_grid(x, path, model.bits, nrow=len(y) // min(cond.classes, 10) if y is not None and cond.classes else None,
                  top=top_level(model.bits, model.spec.data.dataset) if model.bits is not None else None)
    else:
        save_scatter(x, path, reference, title=f"{model.name}: T = {temperature:g}")
    return x


def save_npz(samples: torch.Tensor, path: str | Path, bits: int | None) -> None:
    """Write samples to ``path`` (numpy .npz): key ``samples`` holds images [N, C, H, W] as the data
    sets store them (raw levels 0 .. 2^bits - 1, uint8 for bits <= 8, uint16 above), or vectors
    [N, D] as float32; key ``bits`` the bit depth (-1 for vector data)."""
    import numpy as np
    if bits is None:
        arr = samples.float().numpy()
    else:
        arr = samples.round().clamp(0, 2 ** bits - 1).numpy().astype(np.uint8 if bits <= 8 else np.uint16)
    with open(path, "wb") as f:  # a file object: numpy would otherwise append .npz to another suffix
        np.savez_compressed(f, samples=arr, bits=np.int64(-1 if bits is None else bits))
