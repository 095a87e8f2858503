"""Sampling before/after the two inverse-side levers of issue 12, same process, interleaved.

"before": the mixture coupling inverts its CDF by 47-step bisection (float32) and every 1x1
convolution inverts its weight on every call; "after": safeguarded Newton
(:func:`augflow_dsl.layers.mixture.newton_logit`) and W^-1 cached per weight version
(:class:`augflow_dsl.layers.linear.WeightCache`). At initialisation the coupling nets output zeros,
so every mixture is K identical logistics and any inverse is trivial; ``--perturb`` (default 0.05)
adds that much Gaussian noise to the zero-initialised last layers so that the mixtures are spread
as in a trained model. Prints medians of ``--repeats`` and before / after.

    python examples/bench_levers.py [--batch 8] [--repeats 5] [--perturb 0.05] [specs...]
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch

import augflow_dsl as af
from augflow_dsl.layers import coupling
from augflow_dsl.layers.linear import WeightCache
from augflow_dsl.layers.mixture import bisect_logit

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def before():
    """Bisection instead of Newton, and no 1x1 weight cache."""
    newton, get = coupling.newton_logit, WeightCache.get
    coupling.newton_logit = lambda h, logw, means, log_scales: bisect_logit(h, logw, means, log_scales)
    WeightCache.get = lambda self, module, name, compute: compute()
    try:
        yield
    finally:
        coupling.newton_logit, WeightCache.get = newton, get


def perturb_zero_layers(model: torch.nn.Module, std: float, seed: int = 0) -> int:
    """Add N(0, std^2) noise to every parameter tensor that is all zeros (the zero-initialised
    last layers). Returns how many tensors were changed."""
    g = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() and not p.any():
                p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))
                n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="*", default=["specs/flowpp.flow", "specs/vflow6ch.flow",
                                                  "specs/denseflow-74-10.flow"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--perturb", type=float, default=0.05)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, sampling {args.batch}, "
          f"median of {args.repeats} (interleaved), zero layers perturbed by {args.perturb}")
    for path in args.specs:
        spec = af.load(ROOT / path if not Path(path).is_absolute() else path)
        torch.manual_seed(0)
        model = af.compile(spec)
        x = torch.randint(0, 2 ** (model.bits or 8), (args.batch, *model.data_shape)).float()
        model.initialize(x)
        perturb_zero_layers(model, args.perturb)
        model.eval()

        def sample() -> float:
            torch.manual_seed(1)
            t = time.perf_counter()
            with torch.no_grad():
                model.sample(args.batch)
            return time.perf_counter() - t

        with before():
            sample()
        sample()
        old, new = [], []
        for i in range(args.repeats):
            for which in ((0, 1) if i % 2 == 0 else (1, 0)):
                if which == 0:
                    with before():
                        old.append(sample())
                else:
                    new.append(sample())
        a, b = statistics.median(old), statistics.median(new)
        print(f"{spec.name:18s} sampling before {a:7.3f} s   after {b:7.3f} s   before / after {a / b:.2f}x",
              flush=True)


if __name__ == "__main__":
    main()
