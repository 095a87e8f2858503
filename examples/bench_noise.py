"""What training's per-example noise (runtime.noise) costs a step.

Each process of a K-process run draws the global batch's noise for every draw of the pass and keeps
its own 1/K of the rows, so that example i gets the same noise on 1 or K processes. This times one
training pass (forward, backward) of one process at local batch b = B/K three ways:

* ``plain``: the draws from torch's global generator, as before issue 24 (no feed);
* ``K = 1``: the per-example feed at world 1 (one generator seeded per draw, b rows drawn);
* ``K = k``: the per-example feed as rank 0 of a world of k (B = k b rows drawn, b kept).

and reports medians over ``--repeat`` passes and the ratio to ``plain``. digits-small draws data-sized
noise (dequantization, cross-unit); flowpp adds dropout masks in its nets, which are activation-sized.

    python examples/bench_noise.py [--specs digits-small:64 flowpp:4] [--worlds 1 8] [--repeat 15]
        [--threads 2] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _time(pass_fn, repeat: int, device: torch.device) -> float:
    pass_fn()  # warm-up (and the data-dependent init)
    out = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        pass_fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    from augflow_dsl.compiler.model import compile_spec
    from augflow_dsl.runtime.noise import example_noise

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", nargs="+", default=["digits-small:64", "flowpp:4"], help="NAME:LOCAL_BATCH")
    ap.add_argument("--worlds", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"per-example noise, one training pass (forward + backward) of one process; median of {args.repeat}; "
          f"{args.device}, {args.threads} threads, torch {torch.__version__}")
    print(f"{'spec':<14}{'local b':>8}{'plain ms':>10}" + "".join(f"{f'K={k} ms':>10}{'ratio':>7}" for k in args.worlds))
    for item in args.specs:
        name, _, b = item.partition(":")
        b = int(b)
        torch.manual_seed(0)
        model = compile_spec(str(ROOT / "specs" / f"{name}.flow")).to(device).train()
        x = torch.randint(0, 2 ** model.bits, (b, *model.data_shape), device=device).float()

        def one(noise):
            def run():
                with noise():
                    loss = -model(x).mean()
                loss.backward()
                model.zero_grad(set_to_none=True)
            return run

        plain = _time(one(contextlib.nullcontext), args.repeat, device)
        cells = []
        for k in args.worlds:
            t = _time(one(lambda k=k: example_noise(0, 0, 0, k, k * b)), args.repeat, device)
            cells.append(f"{1e3 * t:>10.1f}{t / plain:>7.3f}")
        print(f"{name:<14}{b:>8}{1e3 * plain:>10.1f}" + "".join(cells))


if __name__ == "__main__":
    main()
