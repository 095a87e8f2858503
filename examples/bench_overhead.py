"""Interpretation overhead: the compiled plan against the same layers assembled by hand.

For denseflow-74-10, flowpp and vflow6ch (or the specs given), builds the compiled model, then a
hand-written module whose forward is the explicit code a researcher would write for that
architecture (loops over blocks and units, cross-unit reads kept in Python lists, no plan),
sharing the very same layer objects, and times forward+backward of the training loss for
both, interleaved, at batch 8 on CPU. Prints the medians and the ratio compiled / hand
(target <= 1.05).

    python examples/bench_overhead.py [--batch 8] [--repeats 5] [specs...]
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import augflow_dsl as af
from augflow_dsl.layers.augment import CrossUnit
from augflow_dsl.layers.drops import FactorOut
from augflow_dsl.ops.registry import COMPOSITE

ROOT = Path(__file__).resolve().parents[1]


class HandFlow(nn.Module):
    """The model written out by hand: dequantize, preprocess, augment, then the layers, with
    DenseFlow's blocks as nested loops. Shares every layer with the compiled model (whose
    ``steps`` hold them in plan order: dequantizer, its ``then`` layers, the augment point, the
    stages, the prior)."""

    def __init__(self, model, spec):
        super().__init__()
        self.m = model  # owns the layers; only its layer objects are used below
        self.n_then = len(spec.dequantize.args.then) if spec.dequantize is not None else 0
        self.augment = spec.augment is not None
        self.blocks = []  # for DenseFlow: [(units, layers per unit, has cross-unit)], else []
        for call in spec.stages:
            if call.definition.role == COMPOSITE:
                a = call.args
                self.blocks.append((a.units, len(a.modules), a.augment is not None))

    def forward(self, x):
        m = self.m
        layers = iter(m.steps[:-1])
        prior = m.steps[-1]
        u, log_r = next(layers).q.sample(x)  # variational dequantization
        h = (x + u) / 2 ** m.bits
        ld = -m.dims * m.bits * math.log(2) - log_r
        for _ in range(self.n_then):
            h, l = next(layers)(h)
            ld = ld + l
        if self.augment:
            z, log_q = next(layers).q.sample(h)
            h = torch.cat([h, z], 1)
            ld = ld - log_q
        if not self.blocks:
            for layer in layers:
                if isinstance(layer, FactorOut):
                    h, l, _ = layer.score(h)
                else:
                    h, l = layer(h)
                ld = ld + l
            return ld + prior.log_prob(h)
        h, l = next(layers)(h)  # the squeeze before the first block
        ld = ld + l
        for b, (units, per_unit, cross) in enumerate(self.blocks):
            block_in, outs = h, []
            for unit in range(units):
                for _ in range(per_unit):  # 4 per glow module: actnorm, 1x1, coupling, swap
                    h, l = next(layers)(h)
                    ld = ld + l
                if cross and unit < units - 1:
                    layer = next(layers)
                    assert isinstance(layer, CrossUnit)
                    reads = [block_in] + outs
                    outs.append(h)
                    h, l = layer(h, torch.cat(reads, 1))
                    ld = ld + l
            if b < len(self.blocks) - 1:
                h, l, _ = next(layers).score(h)  # squeeze-and-drop
                ld = ld + l
        return ld + prior.log_prob(h)


def _time(fn, x) -> float:
    t = time.perf_counter()
    loss = -fn(x).mean()
    loss.backward()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="*", default=["specs/denseflow-74-10.flow", "specs/flowpp.flow",
                                                  "specs/vflow6ch.flow"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"median of {args.repeats} (interleaved)")
    for path in args.specs:
        spec = af.load(ROOT / path if not Path(path).is_absolute() else path)
        torch.manual_seed(0)
        model = af.compile(spec)
        hand = HandFlow(model, spec)
        x = torch.randint(0, 2 ** model.bits, (args.batch, *model.data_shape)).float()
        model.initialize(x)
        model.train()
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(1)
        b = hand(x)
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-3), "the hand-written model must compute the same thing"
        _time(model, x), _time(hand, x)  # warm-up
        tc, th = [], []
        for _ in range(args.repeats):
            tc.append(_time(model, x))
            th.append(_time(hand, x))
            model.zero_grad(set_to_none=True)
        c, h = statistics.median(tc), statistics.median(th)
        print(f"{spec.name:18s} compiled {c:7.3f} s   by hand {h:7.3f} s   ratio {c / h:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
