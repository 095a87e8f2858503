"""Graph -> FlowModel: one flat plan of steps, run by one forward loop and one inverse loop.

Every data-path node of the model chain -- dequantizer, the bijections after it, augment
points, bijections, drops and the prior -- is a step with one protocol
(:mod:`augflow_dsl.layers.base`): ``forward(x, context) -> (y, log_weight)``,
``inverse(y, context) -> x``. The plan (:mod:`augflow_dsl.compiler.plan`) is compiled once from
the graph; ``forward`` sums the log-weights, and the prior, last, drops every remaining dim
(its output is an empty [N, 0] tensor), so ``inverse`` starts from an empty tensor and the
prior's inverse draws z. Neither loop branches on a step's kind.

Log-likelihood terms (nats, per example), each a step's log-weight:
* dequantization (Flow++ eq. 12): -D * bits * ln 2 - log r(u | x), u ~ r (uniform: r = 1);
* input augmentation (VFlow eq. 7): -log q(z | x~), z ~ q;
* cross-unit coupling (DenseFlow eq. 9): log|diag sigma| - log N(e);
* every bijection's log|det J|, every dropped part's and the final prior's log-density.

Randomness and replay go through the model's :class:`~augflow_dsl.layers.base.Draws`, shared
by its steps: ``encode`` sets ``centre`` (integers at bin centres) and a tape that the drops and
the prior record on; ``decode`` replays that tape through the inverse loop; ``sample`` runs the
same loop with an empty tape at a temperature.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..graph.pipeline import analyze
from ..graph import schema as S
from ..graph.schema import CONDITIONER
from ..ops.registry import AUGMENT
from ..layers.base import Draws, InitOnce, UsesNets
from ..layers.condition import ConditionEmbedding, ConditionState
from ..language.models import Spec
from .inputs import as_batch
from .fused import fuse_plan
from .plan import PlanStep, build_layer, compile_plan, layer_for  # noqa: F401 - layer_for is public


@dataclass
class Latents:
    """What ``encode`` returns: the final latent and each dropped part, in plan order."""

    z: torch.Tensor
    dropped: list[torch.Tensor] = field(default_factory=list)


class FlowModel(nn.Module):
    """A compiled flow. Inputs are integer-valued tensors for data with ``bits`` (values
    0 .. 2^bits - 1, any float or integer dtype), real tensors otherwise; see
    :mod:`augflow_dsl.compiler.inputs` for what is refused. ``spec`` is the Spec it was compiled
    from; ``steps`` holds every step's layer in plan order (state_dict keys ``steps.<i>.``)."""

    def __init__(self, spec: Spec, g):
        super().__init__()
        self.spec = spec
        self.name = spec.name
        self.data_shape = tuple(spec.data.shape)
        self.bits = spec.data.bits
        self.dims = spec.data.dims
        plan = compile_plan(g)
        self.steps = nn.ModuleList(s.layer for s in plan)
        self.plan: list[PlanStep] = plan
        self._run = fuse_plan(plan)  # what the two loops run: adjacent affine steps fused (compiler/fused.py)
        self._save_input = any(0 in s.reads for s in plan)
        self.draws = Draws()
        for layer in self.steps:
            layer.draws = self.draws
        self.augmented = sum(d.added for _, d in S.nodes(g) if d.role == AUGMENT and d.chain == S.MODEL)
        self.conditional = spec.condition is not None
        self._cstate = ConditionState()
        if self.conditional:  # one embedding and one per-pass state, shared by every layer that reads y
            self.condition = ConditionEmbedding.of(spec)
            for m in self.modules():
                if getattr(m, "reads_condition", False):
                    m.condition_state = self._cstate

    @property
    def spec_text(self) -> str:
        """The spec's source text (what a saved model is rebuilt from)."""
        return self.spec.text

    # ------------------------------------------------------------------ the two loops
    def _forward_plan(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of the steps' log-weights; each step's context is its reads, concatenated."""
        lw = x.new_zeros(x.shape[0])
        saved = [x if self._save_input else None]
        for layer, reads, save in self._run:
            if not reads:
                context = None
            elif len(reads) == 1:
                context = saved[reads[0]]
            else:
                context = torch.cat([saved[j] for j in reads], 1)
            x, l = layer(x, context)
            lw = lw + l
            saved.append(x if save else None)
        return lw

    def _inverse_plan(self, n: int) -> torch.Tensor:
        """From nothing (an empty [n, 0] tensor) back to data; the prior and the drops draw or
        replay what they scored. A step whose context reads earlier outputs is an augment point
        (the audit guarantees it), and its inverse needs none: every inverse gets ``None``."""
        like = next(iter(self.parameters()), None)
        y = torch.zeros(n, 0, dtype=self._dtype(), device=like.device if like is not None else None)
        for layer, _, _ in reversed(self._run):
            y = layer.inverse(y, None)
        return y

    @contextmanager
    def _drawing(self, temperature: float = 1.0, centre: bool = False, tape: list | None = None):
        d = self.draws
        d.temperature, d.centre, d.tape = temperature, centre, tape
        try:
            yield tape
        finally:
            d.temperature, d.centre, d.tape = 1.0, False, None

    def _dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.get_default_dtype()

    def _batch(self, x) -> torch.Tensor:
        return as_batch(x, self.data_shape, self.bits, self.name, self._dtype())

    @contextmanager
    def _given(self, y, n: int, like: torch.Tensor, repeat: bool = False, traced: bool = False):
        """Hold the condition y of one pass of ``n`` examples for the layers that read it (refusing a
        missing y, a wrongly shaped one, or a y given to an unconditional model). ``repeat``: y (one
        row per example) may also be one label / vector for all n (sampling). ``traced``: y is a graph
        input being traced (the ONNX export): the checks that read its values (labels in 0..K-1,
        finite vectors), which torch.export cannot trace, are left out and the graph takes y as given."""
        if not self.conditional:
            self._refuse_y(y)
            yield
            return
        t = y if traced else self.condition.check(y, n if repeat else None, like)
        if not repeat and t.shape[0] != n:
            raise ValueError(f"y has {t.shape[0]} rows but x has {n} examples")
        before = (self._cstate.raw, self._cstate.embedded)
        self._cstate.raw, self._cstate.embedded = self.condition(t, self._dtype())
        try:
            yield
        finally:
            self._cstate.raw, self._cstate.embedded = before

    # ------------------------------------------------------------------ public API
    def forward(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """The training objective per example: log p(x) (log p(x | y) for a conditional model) in
        nats (one-sample ELBO when the model augments or dequantizes variationally). Same as ``log_prob``."""
        return self.log_prob(x, y)

    def log_prob(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """log p(x), or log p(x | y) for a conditional model: ``y`` a LongTensor [N] of labels or a float
        [N, D] of context vectors (a ValueError names what is missing or wrong)."""
        x = self._batch(x)
        with self._given(y, x.shape[0], x):
            return self._forward_plan(x)

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, y=None, samples: int = 1, chunk: int | None = None) -> torch.Tensor:
        """Importance-weighted estimate log (1/S) sum_s exp(log w_s) (VFlow eq. 5, DenseFlow
        eq. 20), streamed ``chunk`` samples at a time with a running float64 logsumexp, so
        memory stays bounded for any S. ``chunk`` defaults to what keeps one forward pass near
        2^20 input values."""
        _at_least_one(samples=samples, chunk=chunk)
        if not isinstance(x, torch.Tensor):
            x = self._batch(x)  # a numpy array: converted before it is repeated (log_prob checks every chunk)
        n = x.shape[0]
        if getattr(self, "conditional", False):  # checked once here, then repeated with x
            y = self.condition.check(y, None, self._like())
        elif y is not None:
            self._refuse_y(y)
        if chunk is None:  # about 2^20 input values per forward pass: ~340 CIFAR images, ~500k 2-D points
            chunk = max(1, min(samples, (1 << 20) // max(n * self.dims, 1)))
        acc = None
        done = 0
        while done < samples:
            c = min(chunk, samples - done)
            xr = x.repeat(c, *([1] * (x.dim() - 1)))
            yr = None if y is None else y.repeat(c, *([1] * (y.dim() - 1)))
            lw = (self.log_prob(xr) if yr is None else self.log_prob(xr, yr)).view(c, n).double()
            part = torch.logsumexp(lw, 0)
            acc = part if acc is None else torch.logaddexp(acc, part)
            done += c
        return (acc - math.log(samples)).to(self._dtype())

    def bits_per_dim(self, x: torch.Tensor, y=None, samples: int = 1, chunk: int | None = None) -> torch.Tensor:
        """-log p(x) / (D ln 2) (-log p(x | y) / (D ln 2) for a conditional model), D the data dims only
        (augmented dims are not counted)."""
        _at_least_one(samples=samples, chunk=chunk)
        ll = self.log_prob(x, y) if samples == 1 else self.log_likelihood(x, y, samples=samples, chunk=chunk)
        return -ll / (self.dims * math.log(2))

    @torch.no_grad()
    def encode(self, x: torch.Tensor, y=None) -> Latents:
        """The latents of x. Integer data is placed at the centre of its bin (u = 1/2, not a
        sample of r), so ``decode(encode(x)) == x`` exactly whenever the flow's float error
        stays below half a level (always in float64; in float32 a coupling saturated far in its
        tails, such as VFlow's smooth logit, can lose the last level); augmented dims are
        sampled from q(z | x)."""
        x = self._batch(x)
        with self._drawing(centre=True, tape=[]) as tape, self._given(y, x.shape[0], x):
            self._forward_plan(x)
        return Latents(tape[-1], tape[:-1])

    @torch.no_grad()
    def decode(self, latents: Latents, temperature: float = 1.0, y=None) -> torch.Tensor:
        """x from latents; dropped parts missing from ``latents.dropped`` (the earliest first)
        are sampled at ``temperature``; ``y``: the condition the latents were encoded with."""
        n = latents.z.shape[0]
        with self._drawing(temperature, tape=list(latents.dropped) + [latents.z]), \
                self._given(y, n, latents.z, repeat=True):
            return self._inverse_plan(latents.z.shape[0])

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, *, y=None) -> torch.Tensor:
        """n samples at ``temperature``; a conditional model needs ``y``: n labels (or one label for all),
        or n context vectors (or one)."""
        self._check_sampling(n, temperature)
        with self._drawing(temperature), self._given(y, n, self._like(), repeat=True):
            return self._inverse_plan(n)

    def rsample_and_log_prob(self, n: int, y=None, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """n reparameterised samples x = f^-1(z), z ~ N(0, T^2 I) (differentiable in the parameters:
        gradients flow through the inverse plan), with their exact log-density log p(x) (log p(x | y))
        under the model at temperature 1 -- what reverse-KL training and variational inference need.

        Defined only for continuous data without augmentation: there the model's density is the exact
        change of variables. A model of integer data (``bits``) is a discrete distribution whose
        log_prob is a dequantization bound, and an augmented model's log_prob is a one-sample ELBO of
        the joint: neither is the density of the returned samples, so both are refused.

        The log-density is computed by the forward plan on the returned samples (the change of
        variables evaluated at x, with gradients through x and the parameters): one inverse and one
        forward pass."""
        self._check_sampling(n, temperature, "rsample_and_log_prob")
        if self.bits is not None or self.augmented:
            what = f"integer data ({self.bits} bits)" if self.bits is not None else "augmented dims"
            raise ValueError(f"rsample_and_log_prob needs a flow of continuous data without augmentation; "
                             f"'{self.name}' has {what}, so its log_prob is a bound, not the density of a sample")
        pending = [type(m).__name__ for m in self.modules() if isinstance(m, InitOnce) and m._needs_init()]
        if pending:  # its init would run on the samples between drawing them and scoring them
            raise ValueError(f"rsample_and_log_prob: the data-dependent init of {len(pending)} layer(s) "
                             f"({', '.join(sorted(set(pending)))}) has not run; call model.initialize(x) on a batch "
                             "of data (or of a broad base sample) first, or load trained weights")
        with self._drawing(temperature), self._given(y, n, self._like(), repeat=True):
            x = self._inverse_plan(n)
            return x, self._forward_plan(x)

    def _refuse_y(self, y) -> None:
        if y is not None:
            raise ValueError(f"'{self.name}' is unconditional: it takes no y (its spec declares no `condition:`)")

    def _like(self) -> torch.Tensor:
        like = next(iter(self.parameters()), None)
        return like if like is not None else torch.empty(0, dtype=self._dtype())

    @staticmethod
    def _check_sampling(n, temperature, what: str = "sample") -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1 or not temperature > 0:
            raise ValueError(f"{what} needs n >= 1 and temperature > 0; got n={n}, temperature={temperature}")

    def compile_steps(self, **options) -> "FlowModel":
        """torch.compile each back-to-back repeat of a block of steps (a Glow step) as one region, forward
        and inverse (:func:`augflow_dsl.compiler.fused.compile_steps`): the lever for small and vector
        flows, whose time is per-op overhead (docs/speed.md); for convolutional flows use ``compile_nets``."""
        from .fused import compile_steps
        return compile_steps(self, **options)

    def compile_nets(self, **options) -> "FlowModel":
        """torch.compile every conditioner and context net in place (regional compilation: the
        nets hold nearly all the compute; the flat plan around them stays eager, so a 74-module
        DenseFlow compiles in minutes instead of one huge graph). ``options`` go to
        ``nn.Module.compile`` (default: static shapes).

        torch keeps the compiled graphs of one forward function (one net class) in one cache of
        ``torch.compiler.config.recompile_limit`` entries (8 by default) and runs every further
        shape eagerly, silently: Flow++ has 9 conv-attention nets at two shapes plus its
        dequantizer's, each in training, evaluation and no-grad modes. The limits are raised to
        3 entries per net instance (an upper bound: nets of equal shapes share a graph)."""
        from collections import Counter

        from ..layers.base import ContextModule, NetModule
        options.setdefault("dynamic", False)
        nets = [m for m in self.modules() if isinstance(m, (NetModule, ContextModule))]
        per_class = Counter(type(m) for m in nets)
        cfg = torch.compiler.config
        cfg.recompile_limit = max(cfg.recompile_limit, 3 * max(per_class.values(), default=0))
        cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, 3 * len(nets))
        for m in nets:
            m.compile(**options)
        return self

    def set_precision(self, dtype: torch.dtype | None) -> "FlowModel":
        """Run every conditioner and context net under autocast to ``dtype`` (e.g. torch.bfloat16
        on CUDA); the bijections' arithmetic, log-dets and the mixture CDF stay in float32.
        ``None`` turns it off."""
        for m in self.modules():
            if isinstance(m, UsesNets):
                m.autocast_dtype = dtype
        return self

    @torch.no_grad()
    def initialize(self, x: torch.Tensor, y=None) -> None:
        """Run the data-dependent initialisation (actnorm) on a first batch (with its y when conditional)."""
        was = self.training
        self.train()
        self.log_prob(x, y)
        self.train(was)


def _at_least_one(**counts) -> None:
    for what, v in counts.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{what} must be a whole number >= 1; got {v!r}")


def compile_spec(spec: Spec | str, overrides=None) -> FlowModel:
    """Load (a path, with ``overrides``), build and check (:func:`~augflow_dsl.graph.pipeline.analyze`),
    then compile; raises the loader's SpecError for a spec that does not load, and a SpecError
    naming the first error for one that does not check."""
    a = analyze(spec, overrides).raise_if_invalid("cannot compile an invalid spec")
    return build_model(a.spec, a.graph)


def build_model(spec: Spec, g) -> FlowModel:
    """``FlowModel(spec, g)``, with an allocation failure (a checked spec larger than this machine's
    memory) turned into a SpecError that names the spec's size and ``check --memory``."""
    try:
        return FlowModel(spec, g)
    except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].strip()
        if not isinstance(e, (MemoryError, torch.OutOfMemoryError)) and "can't allocate" not in str(e):
            raise
        from ..errors import SpecError, Source
        params = sum(d.params for _, d in S.nodes(g))
        raise SpecError(f"cannot allocate '{spec.name}': its {params:,} parameters take {4 * params / 2**30:,.1f} GiB "
                        f"in fp32, more than this machine could give ({first[:200]}); `augflow-dsl check --memory "
                        f"{spec.file or 'SPEC'}` estimates what it needs", None, Source(spec.text, spec.file)) from None


__all__ = ["FlowModel", "Latents", "build_model", "compile_spec", "layer_for", "build_layer", "CONDITIONER"]
