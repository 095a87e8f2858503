"""1x1 convolutions: mkldnn's NCHW conv against one GEMM over positions (channels-last).

Times forward+backward of a 1x1 conv C -> C at the sizes of DenseFlow's dense layers (batch 8)
three ways: ``F.conv2d`` on NCHW, ``F.conv2d`` on channels-last, and
:class:`augflow_dsl.layers.net_modules.GemmConv2d` (``F.linear`` on the channels-last view), and
prints GFLOP/s (2 FLOPs per MAC, 3 GEMMs per step) as medians. The dense nets use ``GemmConv2d``.

    python examples/bench_layout.py [--repeats 15]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from augflow_dsl.layers.net_modules import GemmConv2d


def timed(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    torch.manual_seed(0)
    print(f"{torch.get_num_threads()} threads, batch {a.batch}, GFLOP/s of forward+backward (median of {a.repeats})")
    print(f"{'C':>5} {'HxW':>6} {'conv NCHW':>10} {'conv CL':>8} {'GemmConv2d':>10}")
    for c, hw in ((176, 16), (304, 16), (432, 16), (432, 8), (432, 4)):
        conv, gemm = nn.Conv2d(c, c, 1), GemmConv2d(c, c, 1)
        x = torch.randn(a.batch, c, hw, hw)
        xcl = x.contiguous(memory_format=torch.channels_last)
        flops = 3 * 2 * a.batch * c * c * hw * hw

        def step(f, inp, grad):
            f(inp.detach().requires_grad_()).backward(grad)

        row = []
        for f, inp in ((conv, x), (conv, xcl), (gemm, xcl)):
            grad = torch.randn_like(f(inp))  # a dense gradient in the output's own layout
            row.append(timed(lambda f=f, t=inp, g=grad: step(f, t, g), a.repeats))
        print(f"{c:>5} {hw:>3}x{hw:<2} " + " ".join(f"{flops / t / 1e9:>9.0f}" for t in row))


if __name__ == "__main__":
    main()
