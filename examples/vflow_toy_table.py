"""Reproduce VFlow's toy table (Sec. 5, Fig. 2-3): 3-step Glow, 20-step Glow and a 3-step 10-dim
VFlow on the 2-D checkerboard; test log-likelihood (nats) as mean +- std over seeds.

Paper settings (Sec. 5): Adam at the spec's lr, batch 64, 100k iterations, 5 seeds, 1,000 test
points, VFlow's likelihood by 100-sample importance sampling (eq. 5, ``FlowModel.log_likelihood``).

The seeds of one model train together as ONE batched model: each seed's FlowModel is compiled
under its own torch seed and initialised (actnorm) on its own first batch; their parameters are
then stacked into one flat [S, P] tensor; a training step is ``vmap`` over seeds of
``grad_and_value`` of one seed's loss (``functional_call`` of a template model), torch.compile'd,
and one fused Adam updates all of it (Adam is elementwise, so every seed's update only reads its
own row). Every seed draws its training batches from its own generator.

    python examples/vflow_toy_table.py                       # the full table (paper settings)
    python examples/vflow_toy_table.py --iterations 2000 --seeds 2 --json small.json
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.func import functional_call, grad_and_value, vmap

import augflow_dsl as af
from augflow_dsl.compiler.model import FlowModel
from augflow_dsl.runtime.schedule import lr_at
from augflow_dsl.runtime.toys import CHECKERBOARD_LOG_DENSITY, toy_points, toy_split

SPECS = Path(__file__).resolve().parents[1] / "specs"
MODELS = ("toy-glow3", "toy-vflow3-10d", "toy-glow20")  # cheapest first
PAPER = {"toy-glow3": (-3.67, 0.03), "toy-glow20": (-3.54, 0.05), "toy-vflow3-10d": (-3.51, 0.01)}  # Sec. 5
CHUNK = 256  # training iterations of data drawn at a time per seed


class SeedStack:
    """``len(seeds)`` independent FlowModels of one spec, trained as one.

    The parameters live in one leaf ``flat`` [S, P]; ``log_prob(x)`` maps [S, B, D] batches to
    [S, B] log-likelihoods with ``vmap`` over ``functional_call`` of the first model (the
    template). Buffers equal in every seed (index tables, flags) are passed unbatched; those that
    differ (each LU's permutation and signs) are stacked."""

    def __init__(self, models: list[FlowModel]):
        self.models = models
        self.template = models[0]
        named = list(self.template.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.flat = torch.stack([torch.cat([p.detach().reshape(-1) for p in m.parameters()])
                                 for m in models]).requires_grad_()
        self.buffers: dict[str, torch.Tensor] = {}
        self.buffer_dims: dict[str, int | None] = {}
        for name, buf in self.template.named_buffers():
            each = [dict(m.named_buffers())[name] for m in models]
            same = all(torch.equal(each[0], b) for b in each[1:])
            self.buffers[name] = buf if same else torch.stack(each)
            self.buffer_dims[name] = None if same else 0
        self._vmapped = vmap(self._one, in_dims=(0, self.buffer_dims, 0), randomness="different")

    @property
    def seeds(self) -> int:
        return len(self.models)

    def params(self) -> dict[str, torch.Tensor]:
        """Views [S, *shape] of ``flat``, one per template parameter."""
        parts = self.flat.split(self.numels, 1)
        return {n: v.view(self.seeds, *s) for n, v, s in zip(self.names, parts, self.shapes)}

    def _one(self, params, buffers, x):
        return functional_call(self.template, (params, buffers), (x,))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self._vmapped(self.params(), self.buffers, x)

    @torch.no_grad()
    def unstack(self) -> list[FlowModel]:
        """Copy each seed's row of ``flat`` back into its own FlowModel (for evaluation)."""
        for m, row in zip(self.models, self.flat.detach()):
            for p, v in zip(m.parameters(), row.split(self.numels)):
                p.copy_(v.view_as(p))
        return self.models


def build_stack(spec: str | Path, seeds: list[int], batch: int | None = None) -> tuple[SeedStack, list]:
    """Compile one FlowModel per seed under ``torch.manual_seed(seed)``, initialise it on the first
    batch of its own data stream (a generator seeded with ``seed``); returns the stack and the
    per-seed generators (positioned after the init batch)."""
    spec = af.load(spec) if not isinstance(spec, af.Spec) else spec
    batch = batch or spec.train.batch
    models, gens = [], []
    for s in seeds:
        torch.manual_seed(s)
        g = torch.Generator().manual_seed(s)
        m = af.compile(spec)
        m.initialize(toy_points(spec.data.dataset, batch, g))
        models.append(m)
        gens.append(g)
    return SeedStack(models), gens


@dataclass
class TrainResult:
    stack: SeedStack
    losses: list[list[float]] = field(default_factory=list)  # per log point: per-seed mean loss (nats)
    ms: dict[str, float] = field(default_factory=dict)  # per-iteration ms: data, step (forward+backward), optimizer
    phases_ms: dict[str, float] = field(default_factory=dict)  # eager autograd split: forward, backward, optimizer
    compile_s: float = 0.0
    seconds: float = 0.0


def seed_step(stack: SeedStack, compile: bool = False):
    """f(flat [S, P], buffers, x [S, B, D]) -> (grads [S, P], losses [S]): ``vmap`` over seeds of
    ``grad_and_value`` of one seed's mean -log p(x) -- one graph, no autograd tape; with
    ``compile`` it runs as one torch.compile'd (inductor) kernel set."""
    template, names, numels, shapes = stack.template, stack.names, stack.numels, stack.shapes

    def loss(row: torch.Tensor, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        params = {n: v.view(s) for n, v, s in zip(names, row.split(numels), shapes)}
        return -functional_call(template, (params, buffers), (x,)).mean()

    fn = vmap(grad_and_value(loss), in_dims=(0, stack.buffer_dims, 0), randomness="different")
    return torch.compile(fn) if compile else fn


def profile_phases(stack: SeedStack, x: torch.Tensor, n: int = 30) -> dict[str, float]:
    """Per-iteration ms of the eager autograd path, split into forward / backward / optimizer
    (on a copy of the parameters; training is not touched)."""
    saved = stack.flat.detach().clone()
    opt = torch.optim.Adam([stack.flat], lr=0.0, fused=True)
    tot = dict.fromkeys(("forward", "backward", "optimizer"), 0.0)
    for i in range(n + 3):
        t0 = time.perf_counter()
        loss = -stack.log_prob(x).mean(1)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if i >= 3:  # warm-up
            for k, dt in zip(tot, (t1 - t0, t2 - t1, t3 - t2)):
                tot[k] += dt
    with torch.no_grad():
        stack.flat.copy_(saved)
    stack.flat.grad = None
    return {k: 1e3 * v / n for k, v in tot.items()}


def train_stack(spec: str | Path, seeds: list[int], iterations: int, *, batch: int | None = None,
                lr: float | None = None, log_every: int = 1000, compile: bool = False, profile: int = 0,
                echo=None) -> TrainResult:
    """Train the seeds of ``spec`` together for ``iterations`` Adam steps (lr and batch from the
    spec's train block unless given); the loss is -log p(x) per example (VFlow: the one-sample
    ELBO, eq. 7). The learning rate follows the spec's schedule (``runtime.lr_at``: warm-up,
    per-step decay after ``decay_after``, ``lr_min``; the data is drawn fresh, so an "epoch" is
    1,000 iterations) and ``train.clip`` clips each seed's gradient norm, as the runtime does.
    Returns the stack, the losses and the time per iteration of each phase."""
    spec = af.load(spec) if not isinstance(spec, af.Spec) else spec
    batch = batch or spec.train.batch
    lr = lr or spec.train.lr
    start = time.perf_counter()
    stack, gens = build_stack(spec, seeds, batch)
    torch.manual_seed(seeds[0])  # the q-networks' noise under vmap (randomness="different")
    res = TrainResult(stack)
    if profile:
        res.phases_ms = profile_phases(stack, torch.stack([toy_points(spec.data.dataset, batch, g)
                                                           for g in [torch.Generator().manual_seed(10**6 + s) for s in seeds]]),
                                       profile)
    step = seed_step(stack, compile)
    flat = stack.flat.detach().clone()
    opt = torch.optim.Adam([flat], lr=lr, fused=True)
    tot = dict.fromkeys(("data", "step", "optimizer"), 0.0)
    window = torch.zeros(stack.seeds)
    data = None
    t_loop = time.perf_counter()
    for it in range(iterations):
        t0 = time.perf_counter()
        if it % CHUNK == 0:
            n = min(CHUNK, iterations - it)
            data = torch.stack([toy_points(spec.data.dataset, n * batch, g).view(n, batch, -1) for g in gens], 1)
        x = data[it % CHUNK]
        t1 = time.perf_counter()
        grads, loss = step(flat, stack.buffers, x)
        t2 = time.perf_counter()
        if spec.train.clip is not None:  # per seed: each row is one model's gradient
            grads = grads * (spec.train.clip / (grads.norm(dim=1, keepdim=True) + 1e-6)).clamp(max=1.0)
        flat.grad = grads
        opt.param_groups[0]["lr"] = lr * lr_at(spec.train, it, 1000) / spec.train.lr
        opt.step()
        t3 = time.perf_counter()
        if it == 0:
            res.compile_s = t2 - t1  # the first call traces (and compiles)
        else:
            for k, dt in zip(tot, (t1 - t0, t2 - t1, t3 - t2)):
                tot[k] += dt
        window += loss.detach()
        done = it + 1
        if done % log_every == 0 or done == iterations:
            k = log_every if done % log_every == 0 else done % log_every
            res.losses.append((window / k).tolist())
            window.zero_()
            if echo:
                ms = 1e3 * (time.perf_counter() - t_loop) / done
                echo(f"  {spec.name} it {done:>6}/{iterations}  loss {' '.join(f'{v:.3f}' for v in res.losses[-1])}"
                     f"  ({ms:.1f} ms/it, {time.strftime('%H:%M:%S', time.gmtime())} UTC)")
    with torch.no_grad():
        stack.flat.copy_(flat)
    res.ms = {k: 1e3 * v / max(iterations - 1, 1) for k, v in tot.items()}
    res.seconds = time.perf_counter() - start
    return res


@torch.no_grad()
def test_log_likelihood(models: list[FlowModel], x: torch.Tensor, samples: int) -> list[float]:
    """Mean test log-likelihood per seed (nats); augmented models by ``samples``-sample
    importance sampling (VFlow eq. 5), the others exactly."""
    out = []
    for m in models:
        m.eval()
        s = samples if (m.spec.augment is not None or m.spec.dequantize is not None) else 1
        out.append(float(m.log_likelihood(x, samples=s).double().mean()))
    return out


def run_model(name: str, seeds: list[int], iterations: int, test_points: int, samples: int | None,
              compile: bool = True, echo=print) -> dict:
    spec = af.load(SPECS / f"{name}.flow")
    start = time.perf_counter()
    res = train_stack(spec, seeds, iterations, log_every=max(1, min(1000, iterations // 10)), compile=compile,
                      profile=30, echo=echo)
    x = toy_split(spec.data.dataset, "test", seed=0)[:test_points]
    t_eval = time.perf_counter()
    ll = test_log_likelihood(res.stack.unstack(), x, samples or spec.train.eval_samples)
    mean = sum(ll) / len(ll)
    std = math.sqrt(sum((v - mean) ** 2 for v in ll) / max(len(ll) - 1, 1))
    return {"model": name, "seeds": seeds, "iterations": iterations, "test_ll": ll, "mean": mean, "std": std,
            "paper": PAPER.get(name), "train_s": res.seconds, "eval_s": time.perf_counter() - t_eval,
            "wall_s": time.perf_counter() - start, "ms_per_iter": res.ms, "eager_phases_ms": res.phases_ms,
            "compile_s": res.compile_s, "compiled": compile, "final_train_loss": res.losses[-1],
            "params_per_seed": sum(res.stack.numels)}


def render(rows: list[dict], total_s: float, loadavg: bool = True) -> str:
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"VFlow Sec. 5 checkerboard: test log-likelihood (nats), best possible -ln 32 = "
                    f"{CHECKERBOARD_LOG_DENSITY:.4f}")
    cols = ("model", "seeds", "iters", "ours mean +- std", "paper", "ours - paper", "ms/it step+opt", "eager f/b/o",
            "wall")
    for col in cols:
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        p = r["paper"]
        ms, ph = r["ms_per_iter"], r["eager_phases_ms"]
        t.add_row(r["model"], str(len(r["seeds"])), str(r["iterations"]), f"{r['mean']:.3f} +- {r['std']:.3f}",
                  f"{p[0]:.2f} +- {p[1]:.2f}" if p else "-", f"{r['mean'] - p[0]:+.3f}" if p else "-",
                  f"{ms['step']:.1f}+{ms['optimizer']:.1f}" + ("" if r.get("compiled") else " (eager)"),
                  f"{ph['forward']:.1f}/{ph['backward']:.1f}/{ph['optimizer']:.1f}" if ph else "-", f"{r['wall_s']:.0f} s")
    console = Console(file=io.StringIO(), width=150)
    console.print(t)
    load = f"; load average now {' '.join(f'{v:.2f}' for v in os.getloadavg())}" if loadavg else ""
    console.print(f"total wall time {total_s:.0f} s{load} (step = compiled forward+backward; eager f/b/o = the "
                  "uncompiled vmapped autograd path, timed over 30 iterations before training)")
    return console.file.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=None, help="Adam steps (default: the spec's train.steps)")
    ap.add_argument("--seeds", type=int, default=5, help="number of seeds, 0 .. N-1 (default 5)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--test-points", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=None, help="importance samples (default: the spec's eval_samples)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: the ops are tiny; 2 threads on a shared 2-core "
                         "machine spin against each other and ran ~5x slower)")
    ap.add_argument("--no-compile", action="store_true", help="run the vmapped step eagerly (no torch.compile)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--render", type=Path, nargs="+", default=None, metavar="JSON",
                    help="only print the table of results saved by --json (several files are merged)")
    a = ap.parse_args(argv)
    if a.render:
        return render_saved(a.render)
    if a.seeds < 1 or (a.iterations is not None and a.iterations < 1) or a.test_points < 1 or a.threads < 1:
        ap.error("--seeds, --iterations, --test-points and --threads must be >= 1")
    if a.json and not (a.json.parent.is_dir() and os.access(a.json.parent, os.W_OK)):
        ap.error(f"--json {a.json}: folder {a.json.parent} does not exist or is not writable")
    torch.set_num_threads(a.threads)
    rows = []
    start = time.perf_counter()
    for name in a.models:
        iters = a.iterations or af.load(SPECS / f"{name}.flow").train.steps
        print(f"{name}: {a.seeds} seeds x {iters} iterations", flush=True)
        rows.append(run_model(name, list(range(a.seeds)), iters, a.test_points, a.samples, not a.no_compile,
                              echo=lambda s: print(s, flush=True)))
        print(f"  -> test log-likelihood {rows[-1]['mean']:.4f} +- {rows[-1]['std']:.4f} "
              f"({', '.join(f'{v:.4f}' for v in rows[-1]['test_ll'])})", flush=True)
        if a.json:  # after every model, so a long run leaves what it has
            _dump(a.json, rows, time.perf_counter() - start, a)
    total = time.perf_counter() - start
    print(render(rows, total))
    if a.json:
        _dump(a.json, rows, total, a)
    return 0


def render_saved(paths: list[Path]) -> int:
    """Print the table of one or more ``--json`` result files (rows in MODELS order)."""
    rows, total = [], 0.0
    for p in paths:
        try:
            saved = json.loads(p.read_text())
            rows += saved["rows"]
            total += saved["info"]["total_s"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"error: cannot read results from {p}: {e}", file=sys.stderr)
            return 1
    rows.sort(key=lambda r: MODELS.index(r["model"]) if r["model"] in MODELS else len(MODELS))
    print(render(rows, total, loadavg=False))
    return 0


def _dump(path: Path, rows: list[dict], total: float, a) -> None:
    info = {"argv": sys.argv, "threads": a.threads, "torch": torch.__version__, "python": platform.python_version(),
            "loadavg": os.getloadavg(), "total_s": total, "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "limit_ll": CHECKERBOARD_LOG_DENSITY}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
