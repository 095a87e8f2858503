"""``augflow-dsl bench SPEC``: time forward+backward and sampling (torch is imported only when
it runs; the timing is :func:`augflow_dsl.compiler.bench.bench_model`)."""
from __future__ import annotations

import json
import sys

from .common import add_set_flag, positive_int


def register(sub) -> None:
    p = sub.add_parser("bench", help="time forward+backward and sampling")
    p.add_argument("spec")
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--compile", action="store_true", help="torch.compile every coupling/context net (regional compilation)")
    p.add_argument("--channels-last", action="store_true",
                   help="channels_last memory format for the whole model and the data "
                        "(the nets already run channels-last inside)")
    p.add_argument("--bf16", action="store_true",
                   help="run the coupling/context nets under bf16 autocast (log-dets and the mixture CDF stay "
                        "float32)")
    p.add_argument("--flops", action="store_true",
                   help="also count the FLOPs of each timed call and report the rate against this machine's "
                        "float32 matrix-multiply rate")
    p.add_argument("--json", action="store_true")
    add_set_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..compiler.bench import bench_model
    from ..compiler.model import FlowModel
    from .compile import checked

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    ok = checked(args.spec, args.set)  # SpecErrors reach the CLI's handler (file:line:col)
    if isinstance(ok, int):
        return ok
    spec, g, _ = ok
    model = FlowModel(spec, g)
    try:
        result = bench_model(model, args.batch, args.device, args.repeats, args.compile,
                             channels_last=args.channels_last, bf16=args.bf16, flops=args.flops)
    except Exception as e:  # torch.compile failures are reported, not dumped
        if not args.compile:
            raise
        print(f"error: torch.compile failed on {spec.name}: {type(e).__name__}: {str(e).splitlines()[0]}",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        mem = (f"peak memory {result['peak_memory_mb']:.0f} MB" if "peak_memory_mb" in result
               else f"peak RSS {result['peak_rss_mb']:.0f} MB")
        print(f"{result['name']}: batch {args.batch} on {args.device}"
              f"{' (torch.compile)' if args.compile else ''}{' channels_last' if args.channels_last else ''}"
              f"{' bf16 nets' if args.bf16 else ''}, {result['threads']} threads, "
              f"{result['params']:,} parameters")
        print(f"  forward+backward {result['fwd_bwd_s']:.3f} s (median of {args.repeats}), "
              f"{result['images_per_s']:.1f} images/s, {mem}")
        print(f"  forward (no grad) {result['forward_s']:.3f} s; sampling {result['sample_s']:.3f} s "
              f"(medians of {args.repeats}); sampling / forward = {result['sample_s'] / result['forward_s']:.2f}")
        if "rss_before_step_mb" in result:
            print(f"  resident memory before the training steps {result['rss_before_step_mb']:.0f} MB, "
                  f"peak {result['peak_rss_mb']:.0f} MB")
        if args.flops:
            parts = [f"{label} {result[k + '_gflop']:.4g} GFLOP at {result[k + '_gflops']:.3g} GFLOP/s "
                     f"({100 * result[k + '_of_gemm']:.0f}%)"
                     for k, label in (("train", "training step"), ("forward", "forward"), ("sample", "sampling"))
                     if k + "_gflop" in result]
            print(f"  arithmetic (matrix products, convolutions, attention; % of this machine's "
                  f"{result['gemm_gflops']:.1f} GFLOP/s float32 2048x2048 matmul): " + "; ".join(parts))
    return 0
