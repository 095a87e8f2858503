"""Validate ``augflow-dsl check --memory`` against measured training-step peaks.

For each spec and batch size, a fresh subprocess builds the model, its optimizer and EMA exactly as
the training runtime does (``runtime.train.Trainer``), runs one training step as a warm-up (the
optimizer's state and the EMA copy exist from then on, as in a run) and then measures the peak of a
second, steady-state step (forward, ``zero_grad``, backward, gradient norm and clip, optimizer
step, EMA update: the runtime's order). The estimate (``augflow_dsl.graph.memory``, pure Python,
computed in this process) is the whole peak: parameters, the previous step's gradients, optimizer
state, EMA copy, the batch, and the activations and transients of the step.

What is compared (CPU):

* ``alloc``: the peak of the bytes torch's CPU allocator holds, followed from before the model was
  built to the end of step 2 by the profiler's memory events (``profile_memory=True``: every
  allocation and free with its size); the peak is taken over step 2. This is the CPU analogue of
  ``torch.cuda.max_memory_allocated`` and counts what the estimate counts: tensors.
* ``rss``: in a process of its own (no profiler), the growth of resident memory over step 2: the
  peak (``VmHWM``, reset with ``/proc/self/clear_refs`` before the step) minus the
  resident memory just before it, after ``malloc_trim`` has handed glibc's free pages back. Before
  the step the static part (parameters, gradients, optimizer state, EMA, batch) is resident, so this
  is compared with the estimate's peak minus its static part (``est. step``: the activations and the
  transient). The child runs with glibc's mmap threshold fixed at 64 KiB
  (``MALLOC_MMAP_THRESHOLD_=65536``; ``--mmap-threshold 0`` keeps glibc's default): every tensor of
  64 KiB or more is then its own mapping and leaves RSS when freed, as it leaves CUDA's allocated
  count. With glibc's default (a threshold that rises to 32 MiB), freed activations stay in the heap
  and RSS growth runs 25-30% above the tensors' bytes (docs/memory.md).

CUDA (``--device cuda``): ``torch.cuda.max_memory_allocated`` over step 2 after
``reset_peak_memory_stats``; written to the torch documentation, not run here (no GPU was lent).

    python examples/bench_memory_estimate.py [--runs digits-small:64,256 flowpp:4,8 ...] [--json]
        [--threads 2] [--device cpu|cuda] [--precision fp32|bf16] [--measure alloc rss]
        [--mmap-threshold 65536]

Each measurement runs in its own process, one at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = ["digits-small:64,256", "flowpp:4,8", "vflow6ch:4,8", "denseflow-74-10:4,8"]


def _status() -> dict[str, int]:
    """/proc/self/status memory fields, in bytes."""
    text = Path("/proc/self/status").read_text()
    return {k: int(v) * 1024 for k, v in re.findall(r"^(Vm\w+|Rss\w+):\s+(\d+) kB", text, re.M)}


def _step(model, optimizer, ema, params, x, clip) -> None:
    """One training step as ``runtime.train.Trainer._loop`` makes it (its backward_and_clip)."""
    from augflow_dsl.runtime.train import backward_and_clip
    backward_and_clip(-model(x).mean(), optimizer, params, clip)
    optimizer.step()
    if ema is not None:
        ema.update(model)


def child(spec_path: str, batch: int, mode: str, device: str, precision: str, threads: int) -> dict:
    """One process: build, warm up with one step, measure the next. ``mode``: ``alloc`` (the CPU
    allocator's peak, profiled from before the model exists), ``rss`` (resident growth, no
    profiler in the process) or ``cuda`` (``max_memory_allocated``)."""
    import torch

    torch.set_num_threads(threads)
    from augflow_dsl.compiler.model import compile_spec
    from augflow_dsl.runtime.train import TrainOptions, Trainer
    from augflow_dsl.language.load import load

    spec = load(spec_path)
    trainer = Trainer(spec, {}, {}, TrainOptions(run=os.devnull, batch=batch, device=device, precision=precision))
    torch.manual_seed(0)
    dev = torch.device(device)
    x = torch.randint(0, 2 ** (spec.data.bits or 8), (batch, *spec.data.shape)).float().to(dev)
    out: dict = {"spec": spec_path, "batch": batch, "mode": mode}
    prof = None
    if mode == "alloc":
        from torch.profiler import ProfilerActivity, profile, record_function
        prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        prof.__enter__()
    base = _status()
    model = compile_spec(spec).to(dev)
    if precision == "bf16":
        model.set_precision(torch.bfloat16)
    model.initialize(x)
    optimizer = trainer._optimizer(model)
    ema = trainer._ema(model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    t0 = time.perf_counter()
    _step(model, optimizer, ema, params, x, trainer.train.clip)
    out["step_seconds"] = time.perf_counter() - t0
    if mode == "alloc":
        with record_function("measured step"):
            _step(model, optimizer, ema, params, x, trainer.train.clip)
        prof.__exit__(None, None, None)
        out["alloc"] = _profiler_peak(prof, "measured step")
    if mode == "rss":
        import ctypes
        import gc
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        before = _status()["VmRSS"]
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        _step(model, optimizer, ema, params, x, trainer.train.clip)
        out["rss"] = _status()["VmHWM"] - before
    if mode == "cuda":
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        _step(model, optimizer, ema, params, x, trainer.train.clip)
        torch.cuda.synchronize()
        out["cuda"] = torch.cuda.max_memory_allocated()
        out["before_step"] = start
    return out


def _profiler_peak(prof, window: str) -> int:
    """The peak over ``window`` (a record_function range) of the CPU bytes allocated since the
    profiler started (the running sum of its memory events)."""
    events = prof.profiler.kineto_results.events()
    mark = next(e for e in events if e.name() == window)
    lo, hi = mark.start_ns(), mark.end_ns()
    mem = sorted((e.start_ns(), e.nbytes()) for e in events
                 if e.name() == "[memory]" and str(e.device_type()).endswith("CPU"))
    live = peak = 0
    for t, nbytes in mem:
        live += nbytes
        if lo <= t <= hi:
            peak = max(peak, live)
    return peak


def estimate(spec_path: str, batch: int, precision: str, device: str = "cpu") -> dict:
    """The estimate's figures; bf16 on CPU is estimated with CPU autocast's op lists (``bf16-cpu``)."""
    from augflow_dsl.graph.memory import estimate as memory_estimate
    p = memory_estimate(spec_path, batch=batch, precision="bf16-cpu" if precision == "bf16" and device == "cpu" else precision)
    return {"estimate": p.peak, "activations": p.activations, "static": p.static, "step": p.peak - p.static,
            "peak_at": f"{p.peak_at}, {p.peak_unit}"}


def _run_child(spec: str, batch: int, mode: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", spec, str(batch), mode, "--device", args.device,
           "--precision", args.precision, "--threads", str(args.threads)]
    env = dict(os.environ)
    if args.mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"measurement of {spec} at batch {batch} ({mode}) failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, help="SPEC:BATCH,BATCH (spec names under specs/)")
    ap.add_argument("--measure", nargs="+", default=["alloc", "rss"], choices=("alloc", "rss"))
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mmap-threshold", type=int, default=65536,
                    help="glibc's MALLOC_MMAP_THRESHOLD_ for the child (0: glibc's default)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs=3, metavar=("SPEC", "BATCH", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        spec, batch, mode = args.child
        print(json.dumps(child(spec, int(batch), mode, args.device, args.precision, args.threads)))
        return 0
    modes = ["cuda"] if args.device == "cuda" else args.measure
    rows = []
    for item in args.runs:
        name, _, sizes = item.partition(":")
        spec = str(ROOT / "specs" / f"{name}.flow") if not name.endswith(".flow") else name
        for batch in (int(b) for b in sizes.split(",")):
            est = estimate(spec, batch, args.precision, args.device)
            row = {"spec": Path(spec).stem, "batch": batch, **est}
            for mode in modes:  # each measurement in its own process
                m = _run_child(spec, batch, mode, args)
                row[mode] = m[mode]
                row[f"{mode}_ratio"] = est["step" if mode == "rss" else "estimate"] / m[mode]
                row["step_seconds"] = m["step_seconds"]
            rows.append(row)
            if not args.json:
                _print_row(row, modes, first=len(rows) == 1)
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


def _print_row(row: dict, modes: list[str], first: bool) -> None:
    mb = 2 ** 20
    if first:
        head = f"{'spec':16s} {'batch':>5s} {'estimate MiB':>12s}"
        if "alloc" in modes or "cuda" in modes:
            head += f" {'measured MiB':>12s} {'ratio':>6s}"
        if "rss" in modes:
            head += f" {'est. step MiB':>13s} {'RSS growth MiB':>14s} {'ratio':>6s}"
        print(head + "  peak at")
    line = f"{row['spec']:16s} {row['batch']:5d} {row['estimate'] / mb:12,.1f}"
    for m in ("alloc", "cuda"):
        if m in modes:
            line += f" {row[m] / mb:12,.1f} {row[m + '_ratio']:6.3f}"
    if "rss" in modes:
        line += f" {row['step'] / mb:13,.1f} {row['rss'] / mb:14,.1f} {row['rss_ratio']:6.3f}"
    print(line + f"  {row['peak_at']}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
