"""Interfaces of the torch layers that implement the registry's ops.

* :class:`Step`: the one protocol of every data-path layer (bijection, dequantizer, augment
  point, drop, prior): ``forward(x, context) -> (y, log_weight)`` and
  ``inverse(y, context) -> x``. ``log_weight`` [N] is the step's term of log p(x) (or of the
  ELBO): log|det dy/dx| for a bijection; minus log q of what an augment point or a dequantizer
  samples (plus their volume terms); the log-density of what a drop or the prior scores.
  ``context`` is what the graph says the step reads besides its input (None, or earlier
  outputs concatenated on channels; see :mod:`augflow_dsl.compiler.plan`). A step that adds
  dims samples them in ``forward`` and drops them in ``inverse``; a step that drops dims scores
  them in ``forward`` and samples them -- or replays them -- in ``inverse`` (see :class:`Draws`).
* :class:`Bijection`: a step whose ``forward`` returns log|det dy/dx| and whose
  ``inverse_and_logdet(y, cond=None) -> (x, logdet)`` mirrors it (log|det dx/dy|); the
  protocol's ``inverse`` keeps x.
* conditioner nets (``NetModule``): ``forward(x, context=None) -> params`` with
  ``params`` of shape [N, io.c_out, io.h, io.w] (or [N, io.c_out] for vectors);
  built by ``from_op(args, io)``; the last layer starts at zero.
* context nets (``ContextModule``): ``forward(x) -> context``; built by
  ``from_op(args, in_shape, bits)``; ``bits`` is the data's bit depth (None when the
  context reads continuous data).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Draws:
    """How a model's stochastic steps draw, shared by all the steps of one FlowModel (module
    state, like ``training``; the model sets it around one pass and resets it after):

    * ``temperature``: a drop or prior that samples in ``inverse`` scales its noise by it;
    * ``centre``: a dequantizer puts integers at the centre of their bin (u = 1/2, log r = 0)
      instead of sampling u -- ``encode``'s convention, which makes decode(encode(x)) == x;
    * ``tape``: None, or a list: each scoring step (drop, prior) appends what it scores in
      ``forward`` and pops its own part from the end in ``inverse`` (forward order in, reverse
      order out), so ``decode`` of encoded latents replays them exactly; an empty tape means
      sample.

    Every random draw of a step (a dequantizer's u, an augment point's or a q-network base's
    epsilon, a drop's or the prior's epsilon when sampling) goes through :func:`draw`, so a
    :class:`NoiseFeed` can record the draws or replace them with given tensors (ONNX export).

    A step built on its own (tests, tools) shares :data:`DEFAULT_DRAWS`: sample at
    temperature 1, record nothing."""

    temperature: float = 1.0
    centre: bool = False
    tape: list | None = None

    def record(self, part: torch.Tensor) -> None:
        if self.tape is not None:
            self.tape.append(part)

    def replay(self) -> torch.Tensor | None:
        """The last recorded part not yet replayed, or None (then the caller samples)."""
        return self.tape.pop() if self.tape else None


DEFAULT_DRAWS = Draws()


class NoiseFeed:
    """The noise of one pass, installed by :func:`feeding`: with ``given`` tensors, each draw
    takes the next one in draw order instead of calling torch (an exported graph's noise inputs);
    without, each draw is made as usual and logged as (owner module, torch function name,
    tensor) -- how a tool learns which noise a pass draws (and can replay it)."""

    def __init__(self, given: list[torch.Tensor] | tuple[torch.Tensor, ...] | None = None):
        self.given = None if given is None else list(given)
        self.used = 0
        self.log: list[tuple[nn.Module, str, torch.Tensor]] = []

    def take(self, owner: nn.Module, kind: str, make) -> torch.Tensor:
        """The draw's tensor; ``make()`` is the draw as torch would make it (see :func:`draw`)."""
        if self.given is None:
            t = make()
            self.log.append((owner, kind, t))
            return t
        if self.used >= len(self.given):
            raise RuntimeError(f"noise feed exhausted: {type(owner).__name__} draws noise #{self.used + 1} "
                               f"but only {len(self.given)} were given")
        t = self.given[self.used]
        self.used += 1
        return t


_FEED: NoiseFeed | None = None


@contextmanager
def feeding(feed: NoiseFeed):
    """Route every :func:`draw` through ``feed`` for the duration (not thread-safe: one pass)."""
    global _FEED
    before, _FEED = _FEED, feed
    try:
        yield feed
    finally:
        _FEED = before


NOISE_KINDS = {"rand": torch.rand, "randn": torch.randn}  # U[0, 1) and N(0, 1), elementwise


@dataclass(frozen=True, eq=False)
class DrawRequest:
    """What a step asks :func:`draw` for: ``kind`` noise of ``shape`` (batch first) with ``like``'s dtype
    and device. Calling it makes the draw as torch would; a feed that draws its own noise (runtime.noise)
    reads the fields instead."""

    kind: str
    shape: tuple
    like: torch.Tensor | None = None

    def __call__(self) -> torch.Tensor:
        kw = {} if self.like is None else {"dtype": self.like.dtype, "device": self.like.device}
        return NOISE_KINDS[self.kind](self.shape, **kw)


def draw(owner: nn.Module, kind: str, shape, like: torch.Tensor | None = None) -> torch.Tensor:
    """A step's random draw of ``kind`` ("rand": U[0, 1), "randn": N(0, 1)) and ``shape`` (batch
    first), with ``like``'s dtype and device -- or, under :func:`feeding`, what the feed gives (a
    given tensor; per-example noise in training, runtime.noise). Without a feed this is exactly
    ``torch.<kind>(shape, dtype=like.dtype, device=like.device)``.

    ``shape`` may also be a zero-argument callable that makes the tensor (the first form of this
    API, ``draw(self, "randn", lambda: torch.randn_like(x))``, which extensions may still use; a feed
    that needs the shape then calls it once and draws its own noise of that shape)."""
    if callable(shape):
        make = shape
    elif kind not in NOISE_KINDS:
        raise ValueError(f"draw kind {kind!r}: one of {sorted(NOISE_KINDS)}")
    else:
        make = DrawRequest(kind, tuple(shape), like)
    return make() if _FEED is None else _FEED.take(owner, kind, make)


def feed_active() -> bool:
    """Whether a :class:`NoiseFeed` is installed (a layer with a faster torch path for its noise,
    e.g. dropout on CUDA, takes the :func:`draw` path then)."""
    return _FEED is not None


class Step(nn.Module):
    """Base of every data-path layer; see the module docstring for the protocol."""

    draws: Draws = DEFAULT_DRAWS

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class Bijection(Step):
    """Base of invertible layers. Subclasses implement ``forward`` and ``inverse_and_logdet``."""

    def inverse_and_logdet(self, y: torch.Tensor, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.inverse_and_logdet(y, context)[0]


class NetModule(nn.Module):
    @classmethod
    def from_op(cls, args, io) -> "NetModule":
        raise NotImplementedError


class ContextModule(nn.Module):
    @classmethod
    def from_op(cls, args, in_shape, bits) -> "ContextModule":
        raise NotImplementedError


def zeros_like_batch(x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(x.shape[0])


def sum_except_batch(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).sum(-1)


def zero_init(layer: nn.Module) -> nn.Module:
    for p in layer.parameters():
        nn.init.zeros_(p)
    return layer


class UsesNets:
    """Mixin of layers that call conditioner nets. ``autocast_dtype`` (set by
    ``FlowModel.set_precision``) runs the nets under autocast (bf16 on CUDA) while the flow's own
    arithmetic -- log-dets, the mixture CDF and its Newton inverse -- stays in float32."""

    autocast_dtype: torch.dtype | None = None

    def run_net(self, net, *args):
        if self.autocast_dtype is None:
            return net(*args)
        with torch.autocast(args[0].device.type, dtype=self.autocast_dtype):
            out = net(*args)
        return out.float()


class InitOnce:
    """Mixin of layers with a data-dependent init: the ``initialized`` buffer is the state that
    is saved and loaded; ``_done`` mirrors it as a plain Python bool so that the check costs no
    tensor read (and gives torch.compile no graph break)."""

    _done: bool = False

    def _needs_init(self) -> bool:
        return self.training and not self._done

    def _mark_initialized(self) -> None:
        self.initialized.fill_(True)
        self._done = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        key = prefix + "initialized"
        if key in state_dict:
            self._done = bool(state_dict[key])


def is_transformed(t: torch.Tensor) -> bool:
    """A tensor under a torch.func transform (vmap / grad wrappers, which have no storage)."""
    return torch._C._functorch.is_functorch_wrapped_tensor(t)
