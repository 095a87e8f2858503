"""``augflow-dsl compile`` and ``augflow-dsl bench`` (torch is imported here, not at start-up)."""
from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..graph.builder import build
from ..graph.check import check_graph, units
from ..language.load import load, loads
from .model import FlowModel


def _checked_spec(args):
    """(spec, graph, report) of a valid spec, or the exit code after printing why not: 2 for a
    missing file, 1 for a spec that does not load or check (file:line:col messages)."""
    if not Path(args.spec).is_file():
        print(f"error: no such spec file: {args.spec}", file=sys.stderr)
        return 2
    spec = load(args.spec, args.set)
    g, diag = build(spec)
    report = check_graph(spec, g, diag)
    if not report.valid:
        for e in report.errors:
            print(e["text"], file=sys.stderr)
        return 1
    return spec, g, report


def save_model(model: FlowModel, path: str | Path, overrides: dict | None = None) -> None:
    """Save the module with its spec text, atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    payload = {"format": "augflow-dsl/1", "spec_text": model.spec_text, "name": model.name,
               "overrides": dict(overrides or {}), "state_dict": model.state_dict()}
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_model(path: str | Path, map_location="cpu") -> FlowModel:
    """Rebuild a saved model from its spec text and load its state (data-dependent init included)."""
    payload = torch.load(path, map_location=map_location, weights_only=True)
    spec = loads(payload["spec_text"], f"{path}:spec", payload.get("overrides"))
    from .model import compile_spec
    model = compile_spec(spec)
    model.load_state_dict(payload["state_dict"])
    return model


def cmd_compile(args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    checked = _checked_spec(args)
    if isinstance(checked, int):
        return checked
    spec, g, report = checked
    console = Console(highlight=False)
    t = time.perf_counter()
    model = FlowModel(spec, g)
    built = time.perf_counter() - t
    numel = sum(p.numel() for p in model.parameters())
    table = Table(title=f"{spec.name}: compiled in {built:.2f} s", header_style="bold")
    for col in ("stage", "layers", "shape out", "params", "MACs"):
        table.add_column(col, justify="left" if col in ("stage", "shape out") else "right")
    for u in units(report):
        table.add_row(escape(u.unit), str(u.ops), "x".join(map(str, u.shape_out)), f"{u.params:,}", f"{u.macs:,}")
    console.print(table)
    d = report.dims
    console.print(f"parameters: {numel:,} (analytic {report.parameters.total:,}); plan: {len(model.plan)} steps; "
                  f"dims: data {d.data:,} + augmented {d.augmented:,} = priors {d.prior:,}")
    if args.out:
        try:
            save_model(model, args.out, dict(_overrides(args.set)))
        except OSError as e:
            print(f"error: cannot save to {args.out}: {e.strerror or e}", file=sys.stderr)
            return 1
        console.print(f"saved to {args.out}")
    return 0 if numel == report.parameters.total else 1


def _overrides(items):
    from ..language.evaluate import parse_override
    return [parse_override(i) for i in items]


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_model(model: FlowModel, batch: int, device: str = "cpu", repeats: int = 3, compiled: bool = False,
                sample: bool = True, channels_last: bool = False, bf16: bool = False,
                flops: bool = False) -> dict:
    """Median times of forward+backward of the training loss and of sampling ``batch`` images;
    with ``flops``, also the FLOPs of each (:mod:`.flops`), the rates they ran at and this
    machine's float32 matrix-multiply rate."""
    model = model.to(device)
    x = _batch(model, batch, device)
    if channels_last and x.dim() == 4:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if bf16:
        model.set_precision(torch.bfloat16)
    model.initialize(x)
    model.train()
    if compiled:
        model.compile_nets()  # regional torch.compile (see FlowModel.compile_nets)
    fn = model

    def step():
        loss = -fn(x).mean() / (model.dims * 0.6931471805599453)
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    out_rss = _current_rss_mb()  # model and data in memory, no training step yet
    step()  # warm-up (and compilation)
    rss_before = _peak_rss_mb()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    out = {"name": model.name, "batch": batch, "device": device, "compiled": compiled,
           "channels_last": channels_last, "bf16": bf16,
           "threads": torch.get_num_threads(), "params": sum(p.numel() for p in model.parameters()),
           "fwd_bwd_s": statistics.median(times), "fwd_bwd_all_s": times,
           "images_per_s": batch / statistics.median(times)}
    if device.startswith("cuda"):
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        out["peak_rss_mb"] = max(rss_before, _peak_rss_mb())
        out["rss_before_step_mb"] = out_rss
    model.eval()
    with torch.no_grad():
        fwd = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            fwd.append(time.perf_counter() - t)
    out["forward_s"] = statistics.median(fwd)
    if sample:
        model.sample(batch)
        st = []
        for _ in range(repeats):
            t = time.perf_counter()
            model.sample(batch)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            st.append(time.perf_counter() - t)
        out["sample_s"] = statistics.median(st)
        out["sample_all_s"] = st
    if flops:
        out.update(_arithmetic(model, step, lambda: fn(x), batch if sample else 0, device, out))
    return out


def _arithmetic(model: FlowModel, step, forward, sample: int, device: str, times: dict) -> dict:
    """FLOPs of one training step, forward and sampling call, their rates at the measured
    medians, and the fraction of this machine's float32 matrix-multiply rate each reaches (also
    under --bf16: a bf16 probe is no measure on CPUs without bf16 units, where it takes minutes)."""
    from .flops import count_flops, gemm_rate
    model.train()
    res = {"train_gflop": count_flops(step) / 1e9}
    model.eval()
    with torch.no_grad():
        res["forward_gflop"] = count_flops(forward) / 1e9
        if sample:
            res["sample_gflop"] = count_flops(lambda: model.sample(sample)) / 1e9
    res["gemm_gflops"] = gemm_rate(device)
    for key, t in (("train", "fwd_bwd_s"), ("forward", "forward_s"), ("sample", "sample_s")):
        if f"{key}_gflop" in res:
            rate = res[f"{key}_gflop"] / times[t]
            res[f"{key}_gflops"], res[f"{key}_of_gemm"] = rate, rate / res["gemm_gflops"]
    return res


def _batch(model: FlowModel, n: int, device: str) -> torch.Tensor:
    if model.bits is not None:
        return torch.randint(0, 2 ** model.bits, (n, *model.data_shape), device=device).float()
    return torch.randn(n, *model.data_shape, device=device)


def cmd_bench(args) -> int:
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    checked = _checked_spec(args)  # SpecErrors reach the CLI's handler (file:line:col)
    if isinstance(checked, int):
        return checked
    spec, g, _ = checked
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
