"""GPU readiness in one table (issue 24): the checks owed to the day a GPU is lent.

    bash examples/gpu_check.sh [--device cuda|cpu] [--quick] [--json] [--only NAME ...]

Rows (each: check, status ok / FAILED / skipped, the figure or the reason, seconds):

* ``cuda tests``: pytest on the test files that mention CUDA, bf16 or channels_last
  (``-k "cuda or bf16 or channels_last"``; pytest's summary line).
* ``bf16 train step``: ``runtime.train.Trainer`` with ``precision="bf16"`` (``train --precision bf16``)
  on digits-small, 20 steps at batch 64: finite bpd, stopped "done". With ``--quick``: the runtime's
  bf16 switch (``model.set_precision``) for one step against float32 on the same batch and noise.
* ``channels_last``: digits-small's log p with the model and the batch in ``torch.channels_last``
  against the contiguous model on the same batch and the same noise (a recorded
  :class:`~augflow_dsl.layers.base.NoiseFeed` replayed; TF32 off), plus a finite backward.
* ``ddp 1 rank``: a process group of one rank (NCCL on CUDA, gloo on CPU; under ``torchrun
  --standalone --nproc_per_node 1``, in process with ``--quick``), the model wrapped in
  ``DistributedDataParallel``: its gradients against the plain model's (the all-reduce path,
  which ``train`` enters only at world size > 1).
* ``torchrun train``: ``torchrun --nproc_per_node 1 -m augflow_dsl train`` of digits-small (not with ``--quick``).
* ``memory SPEC bB``: ``check --memory``'s estimate (``graph.memory.estimate``) against the measured
  peak of a steady-state training step (``examples/bench_memory_estimate.py``'s child:
  ``torch.cuda.max_memory_allocated`` on CUDA, the CPU allocator's profiled peak on CPU); ok within
  +-15% (CPU measures within 1.6%, docs/memory.md).
* ``throughput SPEC bB``: ``augflow-dsl bench``'s ``bench_model``: training-step and sampling images/s
  (DenseFlow-74-10 at batch 64 on CUDA; digits-small at batch 8 on CPU).

Every model is moved off its initial weights first (zero-initialised last layers hide differences);
``--quick`` (CI) uses digits-small with one unit of 8 filters, 1 torch thread, and skips the rows
that need pytest, torchrun or DenseFlow.

Exit 0 when no row FAILED, 1 otherwise; every check runs whatever the others did.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
MEMORY_TOLERANCE = 0.15
QUICK = {"units": 1, "width": 8}  # --quick: digits-small with one unit of 8-filter nets (the memory rows excepted)


@dataclass
class Row:
    check: str
    status: str            # "ok", "FAILED", "skipped"
    figure: str            # the figure, or the reason for FAILED / skipped
    seconds: float = 0.0


class Skip(Exception):
    """A check that does not apply here (its message is the reason)."""


class Failed(Exception):
    """A check that ran and did not hold (its message is the figure that shows it)."""


def _cuda(device: str) -> bool:
    return device.startswith("cuda")


def _sync(device: str) -> None:
    import torch
    if _cuda(device):
        torch.cuda.synchronize()


def _model(spec: str, device: str, batch: int, overrides: dict | None = None):
    """The compiled spec on ``device``, initialized on a random batch, its weights moved off their
    initial values; returns (model, batch)."""
    import torch

    from augflow_dsl.compiler.bench import random_batch
    from augflow_dsl.compiler.model import compile_spec
    from augflow_dsl.language.load import load

    torch.manual_seed(0)
    model = compile_spec(load(str(SPECS / f"{spec}.flow"), overrides or {})).to(device)
    x = random_batch(model, batch, device)
    model.initialize(x)
    with torch.no_grad():  # the nets' last layers start at zero: move them off it, else they hide every difference
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model, x


# ----------------------------------------------------------------------------- the checks
def check_cuda_tests(args) -> str:
    if args.quick:
        raise Skip("--quick (runs in the full check)")
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if re.search(r"cuda|bf16|channels_last", p.read_text()) and p.name != "test_gpu_check.py")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k",
                        "cuda or bf16 or channels_last", *files], cwd=ROOT, capture_output=True, text=True,
                       timeout=args.timeout)
    summary = (r.stdout.strip().splitlines() or ["no output"])[-1].strip("= ")
    if r.returncode not in (0, 5):  # 5: nothing selected
        raise Failed(f"{summary} ({len(files)} files)")
    return f"{summary} ({len(files)} files)"


def check_bf16_step(args) -> str:
    from augflow_dsl.language.load import load
    from augflow_dsl.runtime.train import Trainer, TrainOptions

    if args.quick:  # the runtime's bf16 switch (Trainer.run: model.set_precision) on one step, no run folder
        return _bf16_step(args)
    steps, batch = 20, 64
    with tempfile.TemporaryDirectory() as tmp:
        opts = TrainOptions(run=str(Path(tmp) / "run"), steps=steps, batch=batch, device=args.device,
                            precision="bf16", final_eval=False, eval_images=batch, log_every=1,
                            checkpoint_every=10 ** 6, progress=False, tensorboard=False, sample_n=4)
        over = QUICK if args.quick else {}
        result = Trainer(load(str(SPECS / "digits-small.flow"), over), over, {}, opts).run()
    if result.stopped != "done" or result.bad_steps or not math.isfinite(result.train_bpd or math.nan):
        raise Failed(f"stopped {result.stopped!r}, {result.bad_steps} bad steps, train bpd {result.train_bpd}")
    ips = f", {result.images_per_s:.0f} img/s" if result.images_per_s else ""
    test = f", test bpd {result.test_bpd:.3f}" if result.test_bpd is not None else ""
    return f"digits-small b{batch}, {steps} steps: train bpd {result.train_bpd:.3f}{test}{ips}"


def _bf16_step(args) -> str:
    """digits-small's bpd with the nets under bf16 autocast against float32 (same batch and noise),
    then a backward and an optimizer step: finite, and within 1% of the float32 bpd."""
    import torch

    from augflow_dsl.layers.base import NoiseFeed, feeding

    model, x = _model("digits-small", args.device, 8, QUICK)
    bpd = 1 / (model.dims * math.log(2))
    with torch.no_grad(), feeding(NoiseFeed()) as rec:
        ref = -model(x).mean().item() * bpd
    model.set_precision(torch.bfloat16)
    with feeding(NoiseFeed([t for _, _, t in rec.log])):
        loss = -model(x).mean() * bpd
    optimizer = torch.optim.Adamax(model.parameters(), lr=1e-3)
    loss.backward()
    optimizer.step()
    _sync(args.device)
    finite = all(torch.isfinite(p).all() for p in model.parameters())
    figure = (f"digits-small b8 (one unit, 8 filters): bpd {loss.item():.4f} bf16 vs {ref:.4f} fp32 "
              f"(diff {abs(loss.item() - ref):.1e})")
    if not finite or not abs(loss.item() - ref) <= 0.01 * abs(ref):
        raise Failed(figure + ("" if finite else "; non-finite weights after the step"))
    return figure + ", step finite"


def check_channels_last(args) -> str:
    import torch

    from augflow_dsl.layers.base import NoiseFeed, feeding

    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        model, x = _model("digits-small", args.device, 8, QUICK if args.quick else None)
        model.eval()
        with torch.no_grad(), feeding(NoiseFeed()) as rec:
            ref = model(x)
        noise = [t for _, _, t in rec.log]
        model = model.to(memory_format=torch.channels_last)
        xl = x.contiguous(memory_format=torch.channels_last)
        with feeding(NoiseFeed(noise)):
            lp = model(xl)
        (-lp.mean()).backward()
        _sync(args.device)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    rel = ((lp.detach() - ref).abs().max() / ref.abs().max()).item()
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    if rel > 1e-4 or bad or not math.isfinite(rel):
        raise Failed(f"log p max relative change {rel:.2e} (limit 1e-4); non-finite gradients in {bad[:3]}")
    return f"digits-small b8: log p max relative change {rel:.1e} vs contiguous, gradients finite"


def ddp_compare(device: str, overrides: dict | None = None) -> dict:
    """In a process group already joined: digits-small's gradients under DDP against the plain model's."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from augflow_dsl.layers.base import NoiseFeed, feeding

    model, x = _model("digits-small", device, 8, overrides)
    ddp = DDP(model, device_ids=[torch.device(device).index or 0] if _cuda(device) else None)
    with feeding(NoiseFeed()) as rec:
        (-ddp(x).mean()).backward()
    ddp_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    with feeding(NoiseFeed([t for _, _, t in rec.log])):
        (-model(x).mean()).backward()
    plain = [p.grad for p in model.parameters() if p.grad is not None]
    diff = max((a - b).abs().max().item() for a, b in zip(ddp_grads, plain))
    t = torch.ones(1, device=device)
    dist.all_reduce(t)
    return {"backend": dist.get_backend(), "world": dist.get_world_size(), "grads": len(plain),
            "max_grad_diff": diff, "all_reduce": t.item()}


def check_ddp(args) -> str:
    backend = "nccl" if _cuda(args.device) else "gloo"
    if args.quick:  # in process: what torchrun's child does, without torchrun's ~10 s start-up
        import torch.distributed as dist
        with tempfile.TemporaryDirectory() as tmp:
            dist.init_process_group(backend, init_method=f"file://{tmp}/store", rank=0, world_size=1)
            try:
                out = ddp_compare(args.device, QUICK)
            finally:
                dist.destroy_process_group()
    else:
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                            __file__, "--ddp-child", "--device", args.device], cwd=ROOT, capture_output=True,
                           text=True, timeout=args.timeout)
        if r.returncode:
            raise Failed(f"torchrun exit {r.returncode}: {(r.stderr.strip().splitlines() or [''])[-1][:160]}")
        out = json.loads(r.stdout.strip().splitlines()[-1])
    if out["backend"] != backend or out["all_reduce"] != 1.0 or out["max_grad_diff"] > 1e-5:
        raise Failed(f"{out}")
    how = "in process" if args.quick else "torchrun"
    return (f"{out['backend']}, {how}, world {out['world']}: DDP vs plain gradients max abs diff "
            f"{out['max_grad_diff']:.1e} over {out['grads']} tensors")


def check_torchrun_train(args) -> str:
    if args.quick:
        raise Skip("--quick (torchrun starts in ~10 s on CPU)")
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                            "-m", "augflow_dsl", "train", str(SPECS / "digits-small.flow"), "--device", args.device,
                            "--steps", "20", "--batch", "64", "--run-dir", f"{tmp}/run", "--json",
                            "--no-tensorboard", "--eval-images", "64"], cwd=ROOT, capture_output=True, text=True,
                           timeout=args.timeout)
    if r.returncode:
        raise Failed(f"exit {r.returncode}: {(r.stderr.strip().splitlines() or [''])[-1][:160]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if out["stopped"] != "done" or not math.isfinite(out["test_bpd"]):
        raise Failed(f"stopped {out['stopped']!r}, test bpd {out['test_bpd']}")
    return f"digits-small 20 steps: test bpd {out['test_bpd']:.3f}, {out['images_per_s']:.0f} img/s"


def check_memory(spec: str, batch: int):
    def check(args) -> str:
        from augflow_dsl.graph.memory import estimate
        if args.quick and spec != "digits-small":
            raise Skip("--quick (digits-small only)")
        est = estimate(str(SPECS / f"{spec}.flow"), batch=batch, precision="fp32").peak
        mode = "cuda" if _cuda(args.device) else "alloc"
        if args.quick:  # in process: the CPU profiler's peak is counted from its own start
            sys.path.insert(0, str(ROOT / "examples"))
            import bench_memory_estimate as bme
            measured = bme.child(str(SPECS / f"{spec}.flow"), batch, mode, args.device, "fp32", args.threads)[mode]
        else:
            r = subprocess.run([sys.executable, str(ROOT / "examples" / "bench_memory_estimate.py"), "--child",
                                str(SPECS / f"{spec}.flow"), str(batch), mode, "--device", args.device,
                                "--precision", "fp32", "--threads", str(args.threads)],
                               cwd=ROOT, capture_output=True, text=True, timeout=args.timeout,
                               env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
            if r.returncode:
                raise Failed(f"measurement exit {r.returncode}: {(r.stderr.strip().splitlines() or [''])[-1][:160]}")
            measured = json.loads(r.stdout.strip().splitlines()[-1])[mode]
        ratio = est / measured
        figure = (f"estimate {est / 2**20:,.1f} MiB / {'max_memory_allocated' if mode == 'cuda' else 'allocator peak'} "
                  f"{measured / 2**20:,.1f} MiB = {ratio:.3f}")
        if abs(ratio - 1) > MEMORY_TOLERANCE:
            raise Failed(figure + f" (outside 1 +- {MEMORY_TOLERANCE})")
        return figure
    return check


def check_throughput(spec: str, batch: int):
    def check(args) -> str:
        from augflow_dsl.compiler.bench import bench_model
        from augflow_dsl.compiler.model import FlowModel
        from augflow_dsl.graph.pipeline import analyze
        from augflow_dsl.language.load import load

        a = analyze(load(str(SPECS / f"{spec}.flow"), QUICK if args.quick else {}))
        if not a.valid:
            raise Failed(f"{spec} does not check")
        r = bench_model(FlowModel(a.spec, a.graph), batch, args.device, repeats=1 if args.quick else 3)
        mem = (f", peak {r['peak_memory_mb']:,.0f} MiB" if "peak_memory_mb" in r else "")
        if not (r["images_per_s"] > 0 and r["sample_s"] > 0):
            raise Failed(f"{r}")
        return (f"training step {r['images_per_s']:,.1f} img/s ({r['fwd_bwd_s']:.3f} s), sampling "
                f"{batch / r['sample_s']:,.1f} img/s{mem}")
    return check


def checks(device: str) -> list[tuple[str, object]]:
    """(row name, check) in table order; the sizes follow the device."""
    big = ("denseflow-74-10", 64) if _cuda(device) else ("digits-small", 8)
    return [("cuda tests", check_cuda_tests), ("bf16 train step", check_bf16_step),
            ("channels_last", check_channels_last), ("ddp 1 rank", check_ddp),
            ("torchrun train", check_torchrun_train),
            ("memory digits-small b8", check_memory("digits-small", 8)),
            ("memory denseflow-74-10 b8", check_memory("denseflow-74-10", 8)),
            (f"throughput {big[0]} b{big[1]}", check_throughput(*big))]


def run_checks(todo, args) -> list[Row]:
    """Every check, each whatever the others did: ok, FAILED (its figure, or the exception) or skipped."""
    rows = []
    for name, fn in todo:
        t = time.perf_counter()
        try:
            row = Row(name, "ok", fn(args))
        except Skip as e:
            row = Row(name, "skipped", str(e))
        except Failed as e:
            row = Row(name, "FAILED", str(e))
        except Exception as e:  # a crash is a failed row, not the end of the table
            if args.verbose:
                traceback.print_exc()
            row = Row(name, "FAILED", f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}")
        row.seconds = time.perf_counter() - t
        rows.append(row)
        print(f"{row.check}: {row.status} ({row.seconds:.1f} s)", file=sys.stderr, flush=True)
        if _cuda(args.device):
            import torch
            torch.cuda.empty_cache()
    return rows


def table(rows: list[Row], device: str) -> str:
    """A Markdown table (pasted as it is into docs/speed.md; a '|' in a figure becomes '/')."""
    lines = [f"| check ({device}) | status | figure or reason | s |", "|---|---|---|---|"]
    lines += [f"| {r.check} | {r.status} | {r.figure.replace('|', '/')} | {r.seconds:.1f} |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, help="cuda (default where available) or cpu")
    ap.add_argument("--quick", action="store_true", help="CI sizes: in-process DDP and memory, no pytest or torchrun")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="only the rows whose name starts with one of these")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: 1 with --quick, where 2 threads on a shared 2-core CI host "
                         "made a small conv 90x slower; else torch's own)")
    ap.add_argument("--timeout", type=int, default=300, help="seconds a subprocess may run")
    ap.add_argument("--json", action="store_true", help="the rows as JSON instead of the table")
    ap.add_argument("--verbose", action="store_true", help="print the traceback of a check that crashed")
    ap.add_argument("--ddp-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import torch
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads is None and args.quick:
        args.threads = 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    if args.ddp_child:  # under torchrun: join the group as train's runtime does (NCCL on CUDA, gloo on CPU)
        import torch.distributed as dist
        if _cuda(args.device):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            args.device = f"cuda:{torch.cuda.current_device()}"
        dist.init_process_group("nccl" if _cuda(args.device) else "gloo")
        try:
            print(json.dumps(ddp_compare(args.device)))
        finally:
            dist.destroy_process_group()
        return 0
    if _cuda(args.device) and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available (use --device cpu)", file=sys.stderr)
        return 2
    todo = [(n, f) for n, f in checks(args.device) if not args.only or any(n.startswith(o) for o in args.only)]
    rows = run_checks(todo, args)
    where = torch.cuda.get_device_name() if _cuda(args.device) else f"cpu, {torch.get_num_threads()} threads"
    print(json.dumps([asdict(r) for r in rows]) if args.json else table(rows, where))
    return 1 if any(r.status == "FAILED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
