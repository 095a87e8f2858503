"""Speed against the libraries users would pick instead (issue 22 part 5): normflows, nflows, zuko, FrEIA.

Each pair builds the same model on both sides with equal trainable parameter counts (asserted and printed),
ours from a spec under ``examples/peer_specs/``, theirs from the peer's own classes. In one process, on one
thread, ours and theirs alternate repeat by repeat after a warm-up each (data-dependent init included):

* a training step: log-likelihood of a batch, backward, Adam step (zero_grad included);
* sampling as many points as the batch, under ``torch.no_grad``, right after that side's training step (the
  peers' own sampling path; normflows' ``sample`` also returns log q, FrEIA's inverse is called with
  ``jac=False``). The train/eval switch (a walk over every module) is outside the timing.

Medians over the repeats, and the ratio theirs / ours (above 1: we are faster). ``--compile`` adds a third
side, a copy of ours with ``FlowModel.compile_nets`` (pairs whose model has conditioner nets; the
multi-scale Glow compiles in about 20 s per process on a 2-core CPU); ``--compile-plan`` adds a copy of ours whose
repeated step blocks are compiled as regions (``augflow_dsl.compiler.fused.compile_steps``: the lever for the small
flows, whose time is per-op dispatch; its first call, compilation included, is printed). ``--clock cpu`` times this
thread's CPU time instead of wall time (steadier on a shared host). ``--memory``
also runs one subprocess per model and side that reports the growth of its peak RSS (VmHWM, reset after a
first step on 2 examples: lazy set-up, Adam's state) over three training steps: a step's activations and
temporaries.

    python examples/bench_peers.py                # every pair, default repeats
    python examples/bench_peers.py --quick        # a few repeats, for a smoke run
    python examples/bench_peers.py --only glow2d-nflows nsf8d-zuko --repeats 30 --memory
    python examples/bench_peers.py --only glow2d-nflows glow2d-normflows realnvp2d-zuko nsf8d-nflows nsf8d-zuko \
        --compile-plan                            # docs/speed.md, second pass

Pairs (name: ours, theirs):

* ``glow2d-nflows``, ``glow2d-normflows``: toy-glow20's 2-D Glow (20 x [actnorm, LU 1x1, affine coupling, MLP
  2 x 50]), batch 64, in each peer's coupling convention (tests/test_peers.py). The peers' LU linear layers
  carry a bias ours has not: it is kept as a zero buffer (same work, not a parameter).
* ``realnvp2d-zuko``: zuko's RealNVP (20 affine couplings of one feature on the other, MLP 2 x 50), batch 64.
* ``glow-ms-normflows``: multi-scale Glow on 3x32x32 (3 levels x 4 steps, 128 hidden), normflows'
  ``MultiscaleFlow`` of ``GlowBlock`` as its Glow example builds it, N(0, I) base at every level.
  normflows' LU 1x1 stores full L and U matrices under masks: the count compared is the trainable
  entries (C^2 per step, as ours); the raw ``numel`` is printed beside it.
* ``glow-ms-freia``: the same Glow against FrEIA's ``AllInOneBlock`` (FrEIA has no learned LU 1x1 for
  images; its learned Householder permutation with C reflections has C^2 parameters, as our LU).
* ``nsf8d-nflows``, ``nsf8d-zuko``: an autoregressive RQ-spline flow on 8-D vectors, 5 MADE layers of 2 x 64,
  8 bins, linear tails, batch 256.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

import augflow_dsl as af

warnings.filterwarnings("ignore", message=".*triangular_solve.*")
SPECS = Path(__file__).resolve().parent / "peer_specs"


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def _bias_to_buffer(module: nn.Module) -> None:
    """nflows' (and normflows' copy of it) LU linear layer has a bias ours has not: keep it as a zero buffer."""
    for m in module.modules():
        if type(m).__name__ in ("LULinear", "_LULinear") and isinstance(getattr(m, "bias", None), nn.Parameter):
            b = m.bias.detach().clone()
            del m.bias
            m.register_buffer("bias", b)


# ---------------------------------------------------------------------------------------------- peers --
class Side:
    """One model behind three calls: log_prob(x) per example, sample(n), and its parameter count."""

    def __init__(self, module, log_prob, sample, params, raw=None):
        self.module, self.log_prob, self.sample, self.params = module, log_prob, sample, params
        self.raw = raw if raw is not None else params


def ours(spec: str, x: torch.Tensor) -> Side:
    m = af.compile(af.load(str(SPECS / spec)))
    m.initialize(x)
    return Side(m, lambda x: m(x), lambda n: m.sample(n), n_params(m))


class _Net(nn.Module):
    """An MLP that ignores nflows' context argument."""

    def __init__(self, c_in, hidden, c_out, layers=2):
        super().__init__()
        mods, c = [], c_in
        for _ in range(layers):
            mods += [nn.Linear(c, hidden), nn.ReLU()]
            c = hidden
        mods.append(nn.Linear(c, c_out))
        self.net = nn.Sequential(*mods)

    def forward(self, x, context=None):
        return self.net(x)


def glow2d_nflows(x):
    from nflows import distributions, flows, transforms
    steps = []
    for _ in range(20):
        steps += [transforms.ActNorm(2), transforms.LULinear(2, identity_init=True),
                  transforms.AffineCouplingTransform(torch.tensor([-1, 1]), lambda i, o: _Net(i, 50, o))]
    flow = flows.Flow(transforms.CompositeTransform(steps), distributions.StandardNormal([2]))
    _bias_to_buffer(flow)
    return Side(flow, flow.log_prob, flow.sample, n_params(flow))


def glow2d_normflows(x):
    import normflows as nf
    fl = []
    for _ in range(20):  # normflows lists flows in the sampling direction: coupling, LU, actnorm per step
        net = nf.nets.MLP([1, 50, 50, 2], init_zeros=True)
        fl += [nf.flows.AffineCouplingBlock(net, scale=True, scale_map="sigmoid", split_mode="channel"),
               nf.flows.LULinearPermute(2), nf.flows.ActNorm((2,))]
    fl.reverse()
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), fl)
    _bias_to_buffer(model)
    return Side(model, model.log_prob, lambda n: model.sample(n)[0], n_params(model))


def realnvp2d_zuko(x):
    import zuko
    flow = zuko.flows.RealNVP(2, transforms=20, hidden_features=(50, 50))
    return Side(flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)), n_params(flow))


def _normflows_lu_masked(model) -> int:
    """normflows' Invertible1x1Conv(use_lu=True) keeps L and U as full C x C parameters, used under masks."""
    import normflows as nf
    masked = 0
    for m in model.modules():
        if isinstance(m, nf.flows.Invertible1x1Conv) and m.use_lu:
            c = m.num_channels
            masked += 2 * (c * c - c * (c - 1) // 2)  # L: upper part and diagonal unused; U: lower part and diagonal
    return masked


def glow_ms_normflows(x):
    import normflows as nf
    L, K, hidden = 3, 4, 128
    q0, flows, merges = [], [], []
    for i in range(L):  # i = 0 is the coarsest level, as in normflows' examples/glow.ipynb
        c = 3 * 2 ** (L + 1 - i)
        f = [nf.flows.GlowBlock(c, hidden, split_mode="channel", scale=True) for _ in range(K)]
        f += [nf.flows.Squeeze()]
        flows.append(f)
        if i > 0:
            merges.append(nf.flows.Merge())
            shape = (3 * 2 ** (L - i), 32 // 2 ** (L - i), 32 // 2 ** (L - i))
        else:
            shape = (3 * 2 ** (L + 1), 32 // 2 ** L, 32 // 2 ** L)
        q0.append(nf.distributions.DiagGaussian(shape, trainable=False))
    model = nf.MultiscaleFlow(q0, flows, merges, class_cond=False)
    raw = n_params(model)
    return Side(model, lambda x: model.log_prob(x, None), lambda n: model.sample(n)[0],
                raw - _normflows_lu_masked(model), raw)


def glow_ms_freia(x):
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm
    hidden = 128

    def subnet(c_in, c_out):  # Glow's net, as ours: 3x3, 1x1, 3x3 (zero init), biases, ReLU
        last = nn.Conv2d(hidden, c_out, 3, padding=1)
        nn.init.zeros_(last.weight), nn.init.zeros_(last.bias)
        return nn.Sequential(nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(hidden, hidden, 1), nn.ReLU(), last)

    nodes, outs, c = [Ff.InputNode(3, 32, 32, name="x")], [], 3
    head = nodes[0]
    for level in range(3):
        head = Ff.Node(head, Fm.IRevNetDownsampling, {})
        nodes.append(head)
        c *= 4
        for _ in range(4):
            head = Ff.Node(head, Fm.AllInOneBlock, {"subnet_constructor": subnet, "affine_clamping": 2.0,
                                                    "learned_householder_permutation": c})
            nodes.append(head)
        if level < 2:
            split = Ff.Node(head, Fm.Split, {"section_sizes": [c // 2, c // 2], "dim": 0})
            nodes.append(split)
            out = Ff.OutputNode((split, 1))
            outs.append(out)
            head, c = (split, 0), c // 2
    last = Ff.OutputNode(head)
    inn = Ff.GraphINN(nodes + outs + [last])
    shapes = [(6, 16, 16), (12, 8, 8), (48, 4, 4)]
    normal = torch.distributions.Normal(0.0, 1.0)

    def log_prob(x):
        zs, ljd = inn(x)
        return sum(normal.log_prob(z).flatten(1).sum(1) for z in zs) + ljd

    def sample(n):
        zs = [torch.randn(n, *s) for s in shapes]
        return inn(zs, rev=True, jac=False)[0]

    return Side(inn, log_prob, sample, n_params(inn))


def nsf8d_nflows(x):
    from nflows import distributions, flows, transforms
    steps = []
    for i in range(5):
        if i:
            steps.append(transforms.ReversePermutation(8))
        steps.append(transforms.MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
            features=8, hidden_features=64, num_bins=8, tails="linear", tail_bound=3.0, num_blocks=1,
            use_residual_blocks=False, random_mask=False, activation=torch.relu))
    flow = flows.Flow(transforms.CompositeTransform(steps), distributions.StandardNormal([8]))
    return Side(flow, flow.log_prob, flow.sample, n_params(flow))


def nsf8d_zuko(x):
    import zuko
    flow = zuko.flows.NSF(8, transforms=5, bins=8, hidden_features=(64, 64))
    return Side(flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)), n_params(flow))


# name: (spec, peer, peer builder, batch, data shape, what the peer model is)
PAIRS = {
    "glow2d-nflows": ("glow2d-nflows.flow", "nflows", glow2d_nflows, 64, (2,),
                      "20 x [ActNorm, LULinear, AffineCouplingTransform]"),
    "glow2d-normflows": ("glow2d-normflows.flow", "normflows", glow2d_normflows, 64, (2,),
                         "20 x [ActNorm, LULinearPermute, AffineCouplingBlock]"),
    "realnvp2d-zuko": ("realnvp2d-zuko.flow", "zuko", realnvp2d_zuko, 64, (2,), "zuko.flows.RealNVP, 20 transforms"),
    "glow-ms-normflows": ("glow-ms-normflows.flow", "normflows", glow_ms_normflows, 32, (3, 32, 32),
                          "MultiscaleFlow of 3 x 4 GlowBlock"),
    "glow-ms-freia": ("glow-ms-freia.flow", "FrEIA", glow_ms_freia, 32, (3, 32, 32),
                      "GraphINN of 3 x 4 AllInOneBlock"),
    "nsf8d-nflows": ("nsf8d.flow", "nflows", nsf8d_nflows, 256, (8,),
                     "5 x MaskedPiecewiseRationalQuadraticAutoregressiveTransform"),
    "nsf8d-zuko": ("nsf8d.flow", "zuko", nsf8d_zuko, 256, (8,), "zuko.flows.NSF, 5 transforms"),
}


def build(name: str, batch: int | None):
    spec, peer, make, b, shape, _ = PAIRS[name]
    b = batch or b
    torch.manual_seed(0)
    x = torch.randn(b, *shape)
    sides = {"ours": ours(spec, x), "theirs": make(x)}
    return sides, x


def train_step(side: Side, opt, x):
    opt.zero_grad(set_to_none=True)
    loss = -side.log_prob(x).mean()
    loss.backward()
    opt.step()
    return loss.item()


def sample_step(side: Side, n):
    with torch.no_grad():
        side.sample(n)


CLOCK = time.perf_counter  # --clock cpu: time.thread_time (this thread's CPU time: steadier on a shared host)


def timed(side: Side, fn, *args) -> float:
    """The call's time on CLOCK; the train/eval mode switch (a walk over every module) happens outside it."""
    side.module.train(fn is train_step)
    t0 = CLOCK()
    fn(side, *args)
    return CLOCK() - t0


def run_pair(name: str, repeats: int, batch: int | None, lr: float, compiled: bool = False,
             plan: bool = False, fused_adam: bool = False) -> dict:
    sides, x = build(name, batch)
    o, t = sides["ours"], sides["theirs"]
    assert o.params == t.params, f"{name}: parameter counts differ: ours {o.params}, theirs {t.params}"
    from augflow_dsl.layers.base import ContextModule, NetModule
    if compiled and not any(isinstance(m, (NetModule, ContextModule)) for m in o.module.modules()):
        compiled = False  # nothing for compile_nets to compile (maf's MADE is part of its layer, not a net)
    if compiled:  # a third side: a copy of ours with its nets regionally compiled (FlowModel.compile_nets)
        c = copy.deepcopy(o.module).compile_nets()
        sides["compiled"] = Side(c, lambda x: c(x), lambda n: c.sample(n), n_params(c))
    if plan:  # a side with the plan's repeated blocks compiled as regions (compiler/fused.py, compile_steps)
        from augflow_dsl.compiler.fused import compile_steps
        cp = compile_steps(copy.deepcopy(o.module))
        sides["plan"] = Side(cp, lambda x: cp(x), lambda n: cp.sample(n), n_params(cp))
    # every side gets the same Adam: torch's default (foreach) or, with --fused-adam, its fused kernel
    opts = {k: torch.optim.Adam(s.module.parameters(), lr=lr, fused=fused_adam or None) for k, s in sides.items()}
    n = x.shape[0]
    times = {k: {"train": [], "sample": []} for k in sides}
    warm = {}
    for k, s in sides.items():  # warm-up: data-dependent init on the peers' side, first-call costs (wall time)
        t0 = time.perf_counter()
        s.module.train(True)
        train_step(s, opts[k], x)
        s.module.train(False)
        sample_step(s, n)
        warm[k] = time.perf_counter() - t0
    order = list(sides)
    for r in range(repeats):
        for k in (order if r % 2 == 0 else order[::-1]):  # alternate who goes first
            times[k]["train"].append(timed(sides[k], train_step, opts[k], x))
            times[k]["sample"].append(timed(sides[k], sample_step, n))
    out = {"pair": name, "peer": PAIRS[name][1], "peer_model": PAIRS[name][5], "batch": n, "repeats": repeats,
           "params": o.params, "params_theirs": t.params, "params_raw_theirs": t.raw, "warmup_s": warm}
    for what in ("train", "sample"):
        mo, mt = statistics.median(times["ours"][what]), statistics.median(times["theirs"][what])
        pr = statistics.median(b / a for a, b in zip(times["ours"][what], times["theirs"][what]))
        out[what] = {"ours_ms": 1e3 * mo, "theirs_ms": 1e3 * mt, "ratio": mt / mo, "ratio_pairwise": pr,
                     "all_ms": {k: [1e3 * v for v in times[k][what]] for k in sides}}
        if compiled:
            mc = statistics.median(times["compiled"][what])
            out[what].update(compiled_ms=1e3 * mc, ratio_compiled=mt / mc)
        if plan:
            mp = statistics.median(times["plan"][what])
            out[what].update(plan_ms=1e3 * mp, ratio_plan=mt / mp)
    return out


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def memory_one(name: str, side: str, batch: int | None, lr: float) -> dict:
    """In a fresh process: peak RSS growth over three training steps of one side (after building it).

    Reads this process's own VmHWM (reset through /proc/self/clear_refs), not ``ru_maxrss``, which Linux carries
    over from the parent across fork and exec (a large parent would mask the child's peak)."""
    sides, x = build(name, batch)
    s = sides[side]
    del sides
    opt = torch.optim.Adam(s.module.parameters(), lr=lr)
    s.module.train()
    train_step(s, opt, x[:2])  # lazy library set-up, data-dependent init and Adam's state: not counted
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    base = _status_kb("VmRSS")
    for _ in range(3):
        train_step(s, opt, x)
    peak = _status_kb("VmHWM")
    return {"pair": name, "side": side, "peak_growth_mb": (peak - base) / 1024}


def measure_memory(name: str, batch: int | None, lr: float) -> dict:
    res = {}
    for side in ("ours", "theirs"):
        cmd = [sys.executable, __file__, "--_memory", name, side, "--lr", str(lr)]
        if batch:
            cmd += ["--batch", str(batch)]
        p = subprocess.run(cmd, capture_output=True, text=True, check=True)
        res[side] = json.loads(p.stdout.strip().splitlines()[-1])["peak_growth_mb"]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=list(PAIRS), help="pairs to run (default: all)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per pair (default 40, Glow 15)")
    ap.add_argument("--quick", action="store_true", help="a few repeats (5; the Glow 2)")
    ap.add_argument("--batch", type=int, default=None, help="override every pair's batch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--compile", action="store_true",
                    help="also time a copy of ours with compiled nets (FlowModel.compile_nets)")
    ap.add_argument("--compile-plan", action="store_true",
                    help="also time a copy of ours with its repeated step blocks compiled (compiler.fused.compile_steps)")
    ap.add_argument("--fused-adam", action="store_true",
                    help="every side's Adam uses torch's fused kernel (the same optimizer on both sides; the default "
                         "foreach Adam walks every tensor, a fixed cost that caps the ratio on small flows)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: perf_counter; cpu: this thread's CPU time (steadier on a busy shared host)")
    ap.add_argument("--memory", action="store_true", help="max-RSS growth per side, one subprocess each")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--_memory", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    global CLOCK
    CLOCK = time.thread_time if a.clock == "cpu" else time.perf_counter
    if a._memory:
        print(json.dumps(memory_one(a._memory[0], a._memory[1], a.batch, a.lr)))
        return 0
    results = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), clock {a.clock}, "
          f"load average {os.getloadavg()}",
          flush=True)
    for name in a.only or list(PAIRS):
        big = name.startswith("glow-ms")
        reps = a.repeats or ((2 if big else 5) if a.quick else (15 if big else 40))
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        r = run_pair(name, reps, a.batch, a.lr, compiled=a.compile, plan=a.compile_plan, fused_adam=a.fused_adam)
        r["wall_s"] = time.perf_counter() - t0
        r["load_before"], r["load_after"] = load0, os.getloadavg()[0]
        if a.memory:
            r["memory_mb"] = measure_memory(name, a.batch, a.lr)
        results.append(r)
        tr, sa = r["train"], r["sample"]
        mem = f", peak RSS growth ours {r['memory_mb']['ours']:.0f} MB / theirs {r['memory_mb']['theirs']:.0f} MB" \
            if a.memory else ""
        comp = (f"; compiled ours: train {tr['compiled_ms']:.2f} ms ({tr['ratio_compiled']:.2f}x), sample "
                f"{sa['compiled_ms']:.2f} ms ({sa['ratio_compiled']:.2f}x), "
                f"first call {r['warmup_s']['compiled']:.1f} s" if "compiled_ms" in tr else "")
        if "plan_ms" in tr:
            comp += (f"; compiled plan: train {tr['plan_ms']:.2f} ms ({tr['ratio_plan']:.2f}x), sample "
                     f"{sa['plan_ms']:.2f} ms ({sa['ratio_plan']:.2f}x), first train + sample "
                     f"{r['warmup_s']['plan']:.1f} s")
        print(f"{name}: params ours {r['params']:,} = theirs {r['params_theirs']:,} "
              f"(raw numel {r['params_raw_theirs']:,}); "
              f"train {tr['ours_ms']:.2f} / {tr['theirs_ms']:.2f} ms ({tr['ratio']:.2f}x); "
              f"sample {sa['ours_ms']:.2f} / {sa['theirs_ms']:.2f} ms ({sa['ratio']:.2f}x); "
              f"batch {r['batch']}, {reps} reps, load {load0:.2f}->{r['load_after']:.2f}{mem}{comp}", flush=True)
    print()
    head = ("| model | peer | batch | params (ours = theirs) | train ms ours | theirs | ratio "
            "| sample ms ours | theirs | ratio |")
    if a.memory:
        head += " train peak RSS growth ours / theirs |"
    if a.compile_plan:
        head += " compiled plan: train ms | ratio | sample ms | ratio | first calls s |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in results:
        tr, sa = r["train"], r["sample"]
        row = (f"| {r['pair']} | {r['peer']}: {r['peer_model']} | {r['batch']} | {r['params']:,} | "
               f"{tr['ours_ms']:.2f} | {tr['theirs_ms']:.2f} | {tr['ratio']:.2f}x | "
               f"{sa['ours_ms']:.2f} | {sa['theirs_ms']:.2f} | {sa['ratio']:.2f}x |")
        if a.memory:
            row += f" {r['memory_mb']['ours']:.0f} / {r['memory_mb']['theirs']:.0f} MB |"
        if a.compile_plan:
            row += (f" {tr['plan_ms']:.2f} | {tr['ratio_plan']:.2f}x | {sa['plan_ms']:.2f} | {sa['ratio_plan']:.2f}x"
                    f" | {r['warmup_s']['plan']:.1f} |")
        print(row)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
