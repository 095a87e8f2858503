"""Fused and compiled plans: what ``FlowModel``'s two loops run instead of the plan, step for step.

**Affine runs.** Glow's step starts with actnorm then an invertible 1x1 (Glow Sec. 3.1-3.2):
y = W (x e^s + b) is one affine map y = A x + c with A = W diag(e^s), c = W b, and log|det| =
positions * (sum s + log|det W|), a constant. Any run of such steps -- actnorm (per channel), an
unsplit 1x1 convolution (with or without bias), ``reverse``, ``shuffle`` -- composes the same way,
so on images the run touches the activations once (one 1x1 convolution with bias) instead of once
per step, and backward keeps one input per run instead of one per step. On vectors the C x C
composition costs as many ops as the steps themselves (no gain measured on the 2-D Glow), so
there the run's layers go one by one. The map is rebuilt from the parameters on every call
(gradients are those of the current weights); a 1x1's inverse comes from its weight cache
(:class:`~augflow_dsl.layers.linear.WeightCache`). An actnorm that still needs its data-dependent
init makes its run go one by one for that call (the init must see the actnorm's own input).

**Compiled regions** (:func:`compile_steps`). On small flows the time is per-op dispatch and
autograd bookkeeping, not arithmetic: every back-to-back repeat of a block of deterministic steps
becomes one ``torch.compile``'d region (forward and inverse), one graph shared by all repeats.

Neither is a module of the model: they hold the plan's layers (which keep their parameters,
state-dict keys and train/eval mode), and ``FlowModel.plan`` keeps one record per layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..layers.linear import Conv1x1
from ..layers.normalize import ActNorm
from ..layers.permute import Reverse, Shuffle
from .plan import PlanStep


def fusable(layer) -> bool:
    """A step whose Jacobian is constant and whose map is x -> A x + c on channels, with A shared by
    every position: composable by :class:`AffineRun`."""
    if type(layer) is ActNorm:
        return not layer.image or (layer.per != "element" and layer.split == "none")
    if type(layer) is Conv1x1:
        return layer.split == "none"
    return type(layer) in (Reverse, Shuffle)


class _Map:
    """x -> a (d * x) + c on channels, built step by step: ``a`` None is the identity, ``d`` None no
    scale, ``c`` None no shift; ``ld`` the log|det| per position so far (None: 0). A leading actnorm
    stays a column scale ``d`` (no diag matrix, no matmul) until a matrix comes."""

    def __init__(self, channels: int, like: torch.Tensor):
        self.channels, self.like = channels, like
        self.a = self.c = self.d = self.ld = None

    def _logdet(self, ld: torch.Tensor) -> None:
        self.ld = ld if self.ld is None else self.ld + ld

    def scale_shift(self, e: torch.Tensor, b: torch.Tensor | None) -> None:
        """Then y -> e * y + b."""
        if self.a is None:
            self.d = e if self.d is None else e * self.d
        else:
            self.a = e[:, None] * self.a
        self.c = (None if self.c is None else e * self.c) if b is None else (
            b if self.c is None else torch.addcmul(b, e, self.c))

    def shift(self, b: torch.Tensor) -> None:
        self.c = b if self.c is None else self.c + b

    def matrix(self, w: torch.Tensor) -> None:
        """Then y -> w y."""
        if self.a is None:
            self.a = w if self.d is None else w * self.d
            self.d = None
        else:
            self.a = w @ self.a
        if self.c is not None:
            self.c = w @ self.c

    def rows(self, index: torch.Tensor | None) -> None:
        """Then a permutation of the channels (``index`` None: reversed)."""
        if self.a is None:
            self.a = torch.eye(self.channels, dtype=self.like.dtype, device=self.like.device)
            if self.d is not None:
                self.a, self.d = self.a * self.d, None
        self.a = self.a.flip(0) if index is None else self.a.index_select(0, index)
        if self.c is not None:
            self.c = self.c.flip(0) if index is None else self.c.index_select(0, index)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.a is None:  # actnorms only: elementwise
            shape = (-1,) + (1,) * (x.dim() - 2)
            y = x if self.d is None else x * self.d.view(shape)
            return y if self.c is None else y + self.c.view(shape)
        if x.dim() == 2:
            return x @ self.a.T if self.c is None else torch.addmm(self.c, x, self.a.T)
        return F.conv2d(x, self.a[:, :, None, None], self.c)

    def logdet(self, x: torch.Tensor) -> torch.Tensor:
        if self.ld is None:
            return x.new_zeros(x.shape[0])
        positions = x[0, 0].numel() if x.dim() > 2 else 1
        return (self.ld * positions if positions != 1 else self.ld).expand(x.shape[0])


def _then(layer, m: _Map, inverse: bool) -> None:
    """Compose ``layer``'s map (or its inverse's) after ``m``."""
    if type(layer) is ActNorm:
        s, b = layer.log_scale.reshape(-1), layer.bias.reshape(-1)
        if inverse:  # x = (y - b) e^-s
            m.shift(-b)
            m.scale_shift(torch.exp(-s), None)
        else:
            m.scale_shift(torch.exp(s), b)
        m._logdet(-s.sum() if inverse else s.sum())
    elif type(layer) is Conv1x1:
        mat = layer.mats[0]
        if inverse:  # x = W^-1 (y - bias)
            if layer.bias is not None:
                m.shift(-layer.bias)
            w, ld = mat.inverse_weight_and_logdet()
            m.matrix(w)
        else:
            w, ld = mat.weight_and_logdet()
            m.matrix(w)
            if layer.bias is not None:
                m.shift(layer.bias)
        m._logdet(ld)
    elif type(layer) is Reverse:
        m.rows(None)
    else:
        m.rows(layer.inverse_perm if inverse else layer.perm)


class AffineRun:
    """Adjacent constant-Jacobian steps as one affine map (module docstring); the Step protocol:
    ``forward(x, context) -> (y, log|det|)``, ``inverse(y, context) -> x``."""

    def __init__(self, layers: list):
        self.layers = list(layers)
        self.actnorms = [m for m in self.layers if type(m) is ActNorm]

    def _map(self, x: torch.Tensor, inverse: bool) -> _Map:
        m = _Map(x.shape[1], x)
        for layer in (reversed(self.layers) if inverse else self.layers):
            _then(layer, m, inverse)
        return m

    def __call__(self, x: torch.Tensor, context=None):
        return self.forward(x, context)

    def _fuse(self, x: torch.Tensor) -> bool:
        """Images only: on vectors the composition's C x C ops cost as much as the steps' ops on
        [N, C] (measured on the 2-D Glow: no gain), so vectors run the layers one by one."""
        return x.dim() == 4

    def forward(self, x: torch.Tensor, context=None):
        if not self._fuse(x) or any(a._needs_init() for a in self.actnorms):
            # data-dependent init (it must see each actnorm's own input), or vectors: one by one
            lw = x.new_zeros(x.shape[0])
            for layer in self.layers:
                x, l = layer(x)
                lw = lw + l
            return x, lw
        m = self._map(x, False)
        return m.apply(x), m.logdet(x)

    def inverse_and_logdet(self, y: torch.Tensor, context=None):
        if not self._fuse(y):
            lw = y.new_zeros(y.shape[0])
            for layer in reversed(self.layers):
                y, l = layer.inverse_and_logdet(y)
                lw = lw + l
            return y, lw
        m = self._map(y, True)
        return m.apply(y), m.logdet(y)

    def inverse(self, y: torch.Tensor, context=None) -> torch.Tensor:
        if not self._fuse(y):
            for layer in reversed(self.layers):
                y = layer.inverse(y)
            return y
        return self._map(y, True).apply(y)


def fuse_plan(plan: list[PlanStep]) -> list[PlanStep]:
    """The plan with every run of two or more adjacent fusable steps (no context read, no
    intermediate output read later) that holds an actnorm on images replaced by one
    :class:`AffineRun`; the later steps' reads renumbered to the fused slots. Same log-weights and
    samples to float rounding."""
    out: list[PlanStep] = []
    slot = {0: 0}  # old slot (0: the input, i + 1: output of step i) -> new slot
    i = 0
    while i < len(plan):
        j = i
        while (j < len(plan) and not plan[j].reads and fusable(plan[j].layer)
               and (j == i or not plan[j - 1].save)):
            j += 1
        if j - i >= 2 and any(type(s.layer) is ActNorm and s.layer.image for s in plan[i:j]):
            out.append(PlanStep(AffineRun([s.layer for s in plan[i:j]]), (), plan[j - 1].save))
            slot[j] = len(out)
            i = j
            continue
        s = plan[i]
        out.append(PlanStep(s.layer, tuple(slot[r] for r in s.reads), s.save))
        slot[i + 1] = len(out)
        i += 1
    return out


# ------------------------------------------------------------------ regional compilation of the plan
def _forward_steps(layers: tuple, x: torch.Tensor):
    lw = None
    for layer in layers:
        x, l = layer(x)
        lw = l if lw is None else lw + l
    return x, lw


def _inverse_steps(layers: tuple, y: torch.Tensor) -> torch.Tensor:
    for layer in reversed(layers):
        y = layer.inverse(y)
    return y


class Region:
    """Adjacent plan steps run as one compiled function (forward and inverse each compiled once per
    structure: every repeat of a flow's step block shares the graph, its parameters being inputs)."""

    def __init__(self, layers, forward, inverse):
        self.layers = tuple(layers)
        self._forward, self._inverse = forward, inverse

    def __call__(self, x: torch.Tensor, context=None):
        return self._forward(self.layers, x)

    def inverse(self, y: torch.Tensor, context=None) -> torch.Tensor:
        return self._inverse(self.layers, y)


def _signature(step: PlanStep):
    layer = step.layer
    return ("affine", *map(type, layer.layers)) if isinstance(layer, AffineRun) else type(layer)


def _regionable(step: PlanStep) -> bool:
    """A deterministic bijection that reads no context and whose output no later step reads
    (stochastic steps -- priors, drops, augment points -- draw through the model's Draws and stay eager)."""
    from ..layers.base import Bijection
    return not step.reads and not step.save and (isinstance(step.layer, (Bijection, AffineRun)))


def regions(run: list[PlanStep], max_period: int = 8) -> list[tuple[int, int, int]]:
    """(start, period, repeats) of each block of ``run`` that repeats back to back (at least twice),
    found greedily from the front, the block covering the most steps first."""
    sig = [_signature(s) if _regionable(s) else None for s in run]
    out, i = [], 0
    while i < len(run):
        best = (0, 0)  # (steps covered, period)
        for p in range(1, max_period + 1):
            block = sig[i:i + p]
            if len(block) < p or None in block:
                break
            r = 1
            while sig[i + r * p:i + (r + 1) * p] == block:
                r += 1
            if r >= 2 and r * p > best[0]:
                best = (r * p, p)
        if best[0]:
            out.append((i, best[1], best[0] // best[1]))
            i += best[0]
        else:
            i += 1
    return out


def compile_steps(model, compiler=None, **options):
    """Regional ``torch.compile`` of ``model``'s plan: every back-to-back repeat of a block of
    deterministic steps (a Glow step: actnorm, 1x1, coupling) becomes one compiled region, forward
    and inverse, so a 20-step flow compiles one block instead of 20 (``options`` go to
    ``torch.compile``; default static shapes; ``compiler`` replaces ``torch.compile``). Returns the
    model, its state dict unchanged.

    Measured (examples/bench_peers.py, docs/speed.md): the 2-D Glow's training step 1.4x and its
    sampling 1.8x faster than eager after a first call of about a minute of compilation on a busy
    2-core host; for convolutional flows compile the nets instead (``FlowModel.compile_nets``)."""
    if compiler is None:
        options.setdefault("dynamic", False)
        compiler = torch.compile
    fwd = compiler(_forward_steps, **options)
    inv = compiler(_inverse_steps, **options)
    run = list(model._run)
    found = regions(run)
    if compiler is torch.compile:  # one graph per distinct block, per grad mode, train/eval and shape
        cfg = torch.compiler.config
        cfg.recompile_limit = max(cfg.recompile_limit, 8 * len(found) + 8)
        cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, 8 * len(found) + 8)
    out, i = [], 0
    for start, p, r in found:
        out += run[i:start]
        for k in range(r):
            steps = run[start + k * p:start + (k + 1) * p]
            out.append(PlanStep(Region([s.layer for s in steps], fwd, inv), (), False))
        i = start + p * r
    out += run[i:]
    # later steps' reads: slots shift by the steps folded into regions (regions hold no read slot)
    slot, n_new = {0: 0}, 0
    old = 0
    for s in out:
        n_new += 1
        old += len(s.layer.layers) if isinstance(s.layer, Region) else 1
        slot[old] = n_new
    model._run = [PlanStep(s.layer, tuple(slot[r] for r in s.reads), s.save) for s in out]
    return model
