"""The training runtime's overhead over a bare loop, in images/s (issue: at most 5%).

    python examples/bench_runtime.py specs/digits-small.flow --batch 64 --steps 40 --repeats 3
    python examples/bench_runtime.py specs/denseflow-74-10.flow --batch 8 --steps 4 --repeats 3

Both sides train the same compiled spec with the spec's optimizer on the same batches:

* bare: ``loss = -model.log_prob(x).mean(); opt.zero_grad(); loss.backward(); opt.step()``;
* runtime: ``runtime.train.Trainer`` (schedule, gradient norm and clipping, EMA, non-finite checks,
  metrics rows, progress callback, checkpoints only at the end).

Per-step wall times are taken between consecutive steps (the runtime's progress callback; the bare
loop's own clock), the first ``--warmup`` steps of each run dropped; runs alternate A/B ``--repeats``
times and the medians are compared. Data: the spec's own data set when it is available offline
(digits), otherwise random integer images of the spec's shape (CIFAR-10 cannot be downloaded here);
the same tensors feed both sides.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import augflow_dsl as af
from augflow_dsl.runtime import data as data_mod
from augflow_dsl.runtime.train import TrainOptions, Trainer


def synthetic_source(spec, n: int):
    g = torch.Generator().manual_seed(0)
    shape = spec.data.shape
    if spec.data.bits:
        x = torch.randint(0, 2 ** spec.data.bits, (n, *shape), generator=g, dtype=torch.uint8)
    else:
        x = torch.randn(n, *shape, generator=g)
    items = data_mod.TensorItems(x)
    return data_mod.DataSource(spec.data.dataset or "synthetic", items, items, tuple(shape), spec.data.bits)


def source_for(spec, n: int):
    try:
        return data_mod.open_dataset(spec.data)
    except data_mod.DataError:
        return synthetic_source(spec, n)


def bare(spec, source, batch: int, steps: int) -> list[float]:
    torch.manual_seed(0)
    model = af.compile(spec)
    model.initialize(data_mod.init_batch(source.train, min(spec.train.init_batch, batch), 0))
    opt = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax, "adamw": torch.optim.AdamW}[spec.train.optimizer](
        model.parameters(), lr=spec.train.lr)
    stream = data_mod.BatchStream(source.train, batch=batch, seed=0)
    times = [time.perf_counter()]
    done, epoch = 0, 0
    while done < steps:
        for x in stream.epoch(epoch):
            loss = -model.log_prob(x).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter())
            done += 1
            if done == steps:
                break
        epoch += 1
    return [b - a for a, b in zip(times, times[1:])]


def runtime(spec, source, batch: int, steps: int) -> list[float]:
    times: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        opts = TrainOptions(run=str(Path(d) / "run"), steps=steps, batch=batch, log_every=10, eval_every=10**9,
                            eval_images=1, sample_n=1, checkpoint_every=10**9)
        trainer = Trainer(spec, {}, {"init_batch": min(spec.train.init_batch, batch)}, opts,
                          on_progress=lambda **kw: times.append(time.perf_counter()))
        orig = data_mod.open_dataset
        data_mod.open_dataset = lambda *a, **k: source
        try:
            trainer.run()
        finally:
            data_mod.open_dataset = orig
    return [b - a for a, b in zip(times, times[1:])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    spec = af.load(a.spec)
    source = source_for(spec, max(4 * a.batch, 256))
    b_all, r_all = [], []
    for rep in range(a.repeats):
        b = bare(spec, source, a.batch, a.steps + a.warmup)[a.warmup:]
        r = runtime(spec, source, a.batch, a.steps + a.warmup)[a.warmup:]
        b_all += b
        r_all += r
        print(f"repeat {rep}: bare {statistics.median(b) * 1e3:.1f} ms/step, runtime {statistics.median(r) * 1e3:.1f} "
              f"ms/step", flush=True)
    mb, mr = statistics.median(b_all), statistics.median(r_all)
    print(f"{spec.name} batch {a.batch}, torch threads {torch.get_num_threads()}: bare {a.batch / mb:.1f} img/s, "
          f"runtime {a.batch / mr:.1f} img/s; runtime overhead {100 * (mr / mb - 1):+.1f}% (medians of "
          f"{len(b_all)} steps each)")


if __name__ == "__main__":
    main()
