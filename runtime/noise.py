"""Training's noise, example by example: the same curve on 1 or K processes (issue 24).

Every random draw of a training pass -- a dequantizer's u, an augment point's or a q-network base's
epsilon, DenseFlow's cross-unit noise, a net's dropout mask -- goes through
:func:`augflow_dsl.layers.base.draw`. During a training step the trainer installs a
:class:`PerExampleNoise` feed, which makes the rows of the k-th draw of the pass a function of

    (run seed, step, purpose, k, global example index)

alone: the k-th draw's noise for the global batch comes from one generator seeded with
``derive_seed(seed, "noise", purpose, step, k)``, and each process keeps the rows of its own slice
of the global batch (rank r holds examples [r B/K, (r+1) B/K), as runtime.data hands them out). So
example i gets the same noise whether one process trains on the whole batch or K processes each hold
a slice, and with the data order already a function of (seed, epoch, position) (runtime.data), the
loss curve of a run on K processes is the 1-process curve (to float reduction order). A resume needs
no generator state for it: the noise is a function of the step.

Cost: each process draws the global batch's noise and keeps 1/K of it (one generator call per draw,
as before; K times the numbers). examples/bench_noise.py, docs/speed.md: the feed costs under 1 % of a
pass; on CPU, 8 processes cost digits-small's pass 2.4 % (data-sized draws) and Flow++'s 24 % at a local
batch of 4 (dropout masks are activation-sized). One generator per example would draw only the own rows
but cost a generator call per example and draw on every run, one process included.

``purpose`` keeps passes of one step apart: "train" for the update's forward pass, "check" for the
divergence guard's re-scoring of the weights about to be checkpointed (runtime.divergence).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from augflow_dsl.layers.base import NOISE_KINDS, DrawRequest, NoiseFeed, feeding

from .data import derive_seed


class PerExampleNoise(NoiseFeed):
    """A :class:`~augflow_dsl.layers.base.NoiseFeed` that draws each pass's noise for the global batch
    of ``global_batch`` examples and hands this process rows ``[first, first + local)``."""

    def __init__(self, seed: int, step: int, first: int, local: int, global_batch: int, purpose: str = "train"):
        super().__init__()
        if not (0 <= first and first + local <= global_batch):
            raise ValueError(f"the slice [{first}, {first + local}) is not inside a global batch of {global_batch}")
        self.seed, self.step, self.purpose = seed, step, purpose
        self.first, self.local, self.global_batch = first, local, global_batch

    @torch.compiler.disable  # a generator per draw: eager, between the compiled nets' graphs
    def take(self, owner: torch.nn.Module, kind: str, make) -> torch.Tensor:
        if isinstance(make, DrawRequest):
            shape, like = make.shape, make.like
        else:  # an extension's draw(self, kind, lambda: ...): learn the shape from one call
            like = make()
            shape = tuple(like.shape)
        if kind not in NOISE_KINDS:
            raise ValueError(f"{type(owner).__name__} draws {kind!r} noise; per-example noise knows "
                             f"{sorted(NOISE_KINDS)}")
        if not shape or shape[0] != self.local:
            raise RuntimeError(f"{type(owner).__name__} draws noise of shape {tuple(shape)} in a training pass "
                               f"over {self.local} examples: a draw's first axis must be the batch, so that its "
                               f"rows can be a function of the global example index")
        dtype = like.dtype if like is not None else torch.get_default_dtype()
        device = like.device if like is not None else torch.device("cpu")
        g = torch.Generator(device=device)
        g.manual_seed(derive_seed(self.seed, "noise", self.purpose, self.step, self.used))
        self.used += 1
        full = NOISE_KINDS[kind]((self.global_batch, *shape[1:]), generator=g, dtype=dtype, device=device)
        return full if self.local == self.global_batch else full[self.first:self.first + self.local]


@contextmanager
def example_noise(seed: int, step: int, rank: int, world: int, global_batch: int, purpose: str = "train"):
    """Install the per-example noise of ``step`` for rank ``rank`` of ``world`` around one pass."""
    local = global_batch // world
    with feeding(PerExampleNoise(seed, step, rank * local, local, global_batch, purpose)) as feed:
        yield feed


__all__ = ["PerExampleNoise", "example_noise"]
