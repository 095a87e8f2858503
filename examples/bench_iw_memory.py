"""Memory of importance-weighted evaluation: peak resident memory of ``runtime.evaluate`` with
S = 64 against S = 16,384 importance samples for DenseFlow-74-10 on 2 CIFAR-sized images (CPU).

Each S runs in a fresh process (the kernel's peak-RSS counter only grows): build the model
(random weights, actnorm initialised on the 2 images), note the resident memory, evaluate with
``--batch`` examples per forward pass, report the peak's growth over that baseline and the RSS
after every forward pass (flat when memory is bounded). DenseFlow's forward is ~16 GMAC per image,
so S = 16,384 on 2 images is 32,768 image-forwards: hours on a CPU. ``--max-seconds`` stops a
run after that long (the passes are all the same size, so the peak over the first ones is the
steady-state peak) and the report says how much of the work was done and extrapolates its time.
For contrast it also estimates what one unchunked pass over all S samples would take (the
per-image growth at ``--batch`` times S x images), the cost ``--batch`` bounds away.

    python examples/bench_iw_memory.py [--samples 64 16384] [--batch 32] [--max-seconds 600] [--json]

Measured (development machine: 2 cores shared with other jobs, load ~13; --batch 32 --max-seconds 900):
  S =     64: baseline 1,097 MB, peak 1,174 MB (growth 76 MB); 130/130 image-forwards in 808 s
  S = 16,384: baseline 1,092 MB, peak 1,153 MB (growth 62 MB); RSS after each of 7 passes 1,098..1,140 MB;
              stopped after 194/32,770 image-forwards (0.6 %) in 967 s; the whole run would take ~45 h here
  one unchunked pass over all 16,384 x 2 samples: ~78 GB by linear extrapolation (2.4 MB per image)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Stop(Exception):
    pass


def child(spec: str, samples: int, batch: int, images: int, max_seconds: float) -> dict:
    import torch

    import augflow_dsl as af
    from augflow_dsl.runtime.scoring import evaluate

    torch.manual_seed(0)
    model = af.compile(spec)
    x = torch.randint(0, 256, (images, *model.data_shape)).float()
    model.initialize(x)
    model.eval()
    base = _rss_mb()
    base_peak = _peak_mb()
    trace: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    state = {"done": 0, "total": images * (1 + samples)}

    def on_progress(done: int, total: int, stats: dict) -> None:
        state["done"] = done
        trace.append((done, _rss_mb()))
        if time.perf_counter() - t0 > max_seconds and done < total:
            raise _Stop

    stopped = False
    result = None
    try:
        result = evaluate(model, x, samples=samples, batch=batch, progress=on_progress)
    except _Stop:
        stopped = True
    seconds = time.perf_counter() - t0
    frac = state["done"] / state["total"]
    rss_after = [r for _, r in trace[1:]] or [float("nan")]  # after each IW forward pass
    return {"samples": samples, "batch": batch, "images": images, "threads": torch.get_num_threads(),
            "params": sum(p.numel() for p in model.parameters()),
            "baseline_rss_mb": base, "peak_rss_mb": _peak_mb(), "peak_before_eval_mb": base_peak,
            "peak_growth_mb": _peak_mb() - base, "rss_after_passes_min_mb": min(rss_after),
            "rss_after_passes_max_mb": max(rss_after), "passes": len(trace),
            "image_forwards_done": state["done"], "image_forwards_total": state["total"],
            "fraction_done": frac, "seconds": seconds, "stopped_early": stopped,
            "seconds_full_estimate": seconds / frac if frac > 0 else None,
            "iw_bpd": result.iw_bpd if result else None, "elbo_bpd": result.elbo_bpd if result else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default=str(ROOT / "specs" / "denseflow-74-10.flow"))
    ap.add_argument("--samples", type=int, nargs="+", default=[64, 16384])
    ap.add_argument("--batch", type=int, default=32, help="examples per forward pass (the memory bound)")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=600.0, help="stop each run after this long")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.spec, a.samples[0], a.batch, a.images, a.max_seconds)))
        return 0
    rows = []
    for s in a.samples:
        cmd = [sys.executable, __file__, "--child", "--spec", a.spec, "--samples", str(s), "--batch", str(a.batch),
               "--images", str(a.images), "--max-seconds", str(a.max_seconds)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        r = rows[-1]
        if not a.json:
            print(f"S = {s:>6,}: baseline {r['baseline_rss_mb']:,.0f} MB, peak {r['peak_rss_mb']:,.0f} MB "
                  f"(growth {r['peak_growth_mb']:,.0f} MB); RSS after each of {r['passes']} passes "
                  f"{r['rss_after_passes_min_mb']:,.0f}..{r['rss_after_passes_max_mb']:,.0f} MB; "
                  f"{r['image_forwards_done']:,}/{r['image_forwards_total']:,} image-forwards in "
                  f"{r['seconds']:.0f} s{' (stopped early; full run ~%.0f s)' % r['seconds_full_estimate'] if r['stopped_early'] else ''}",
                  flush=True)
    per_image = max(rows[0]["peak_growth_mb"], 0.0) / a.batch
    naive = {s: per_image * s * a.images for s in a.samples}
    if a.json:
        print(json.dumps({"runs": rows, "unchunked_estimate_mb": naive}))
    else:
        for s, mb in naive.items():
            print(f"one unchunked pass over S = {s:,} x {a.images} images would grow by ~{mb:,.0f} MB "
                  f"(estimate: {per_image:.1f} MB per image at batch {a.batch}, linear)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
