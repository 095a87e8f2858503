"""Eager against regionally compiled nets (``FlowModel.compile_nets``), side by side in one process.

Two copies of one spec's model with the same weights; their training steps (loss + gradients of
every parameter, as ``augflow-dsl bench``) and their sampling alternate after a warm-up, so both
see the same machine load; prints the medians, their ratio and the compile time. Run:

    python examples/bench_compile.py specs/flowpp.flow --batch 8 --repeats 5
    python examples/bench_compile.py specs/denseflow-74-10.flow --batch 8 --repeats 5 --no-sample
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch

import augflow_dsl as af
from augflow_dsl.compiler.bench import random_batch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-sample", action="store_true", help="time training steps only")
    ap.add_argument("--set", nargs="*", default=[], metavar="K=V", help="spec variables, e.g. size=16")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    try:
        eager = af.compile(af.load(a.spec, a.set or None))  # "name=value" strings, parsed as --set does
    except af.SpecError as e:  # file:line:col and what was expected, as `augflow-dsl check` prints it
        print(e, file=sys.stderr)
        return 1
    x = random_batch(eager, a.batch, "cpu")
    eager.initialize(x)
    compiled = copy.deepcopy(eager).compile_nets()
    models = {"eager": eager, "compiled": compiled}

    def step(m):
        m.train()
        loss = -m(x).mean() / (m.dims * 0.6931471805599453)
        loss.backward()
        m.zero_grad(set_to_none=True)

    def sample(m):
        m.eval()
        with torch.no_grad():
            m.sample(a.batch)

    times: dict[str, dict[str, list[float]]] = {k: {"train": [], "sample": []} for k in models}
    warm: dict[str, float] = {}
    for name, m in models.items():  # warm-up: the compiled copy compiles here
        t = time.perf_counter()
        step(m)
        if not a.no_sample:
            sample(m)
        warm[name] = time.perf_counter() - t
    for _ in range(a.repeats):
        for name, m in models.items():
            for what, fn in (("train", step), ("sample", sample)):
                if what == "sample" and a.no_sample:
                    continue
                t = time.perf_counter()
                fn(m)
                times[name][what].append(time.perf_counter() - t)
    out = {"spec": a.spec, "batch": a.batch, "threads": torch.get_num_threads(), "repeats": a.repeats,
           "warmup_s": warm}
    for what in ("train", "sample"):
        if times["eager"][what]:
            e, c = statistics.median(times["eager"][what]), statistics.median(times["compiled"][what])
            out[what] = {"eager_s": e, "compiled_s": c, "speedup": e / c,
                         "eager_all_s": times["eager"][what], "compiled_all_s": times["compiled"][what]}
            print(f"{what:>6}: eager {e:.3f} s, compiled {c:.3f} s (median of {a.repeats}): {e / c:.2f}x")
    print(f"warm-up (compilation): {warm['compiled']:.0f} s compiled, {warm['eager']:.1f} s eager")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
