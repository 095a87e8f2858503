"""Timing a compiled module: forward+backward of the training loss, forward, sampling (with
``flops``, their FLOP counts and rates); what ``augflow-dsl bench`` reports."""
from __future__ import annotations

import os
import resource
import statistics
import time

import torch

from .model import FlowModel


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
    x = random_batch(model, batch, device)
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


def random_batch(model: FlowModel, n: int, device: str) -> torch.Tensor:
    """``n`` random inputs of the model's data: integer levels for integer data, N(0, 1) otherwise."""
    if model.bits is not None:
        return torch.randint(0, 2 ** model.bits, (n, *model.data_shape), device=device).float()
    return torch.randn(n, *model.data_shape, device=device)


__all__ = ["bench_model", "random_batch"]
