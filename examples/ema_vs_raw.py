"""EMA evaluation against raw evaluation, over one training run (issue 24).

Trains a spec with the training runtime itself (``runtime.train.Trainer``: its data order, noise,
schedule and EMA) and, through the Trainer's hooks, keeps further EMAs of the same weights beside the
run's own: each ``--ema DECAY`` (plain) and ``--ema DECAY:warmup`` (TensorFlow's num_updates rule,
``runtime.ema.EMA.decay_at``). Every ``--eval-every`` steps it evaluates the raw weights and each EMA on
the whole test split (one-sample ELBO, the same noise seed for all), and at the end the importance
weighted figure (``--iw`` samples). Prints one table; ``--json`` writes the rows.

    python examples/ema_vs_raw.py [--spec specs/digits-small.flow] [--steps N] [--eval-every 69]
        [--ema 0.99 0.99:warmup 0.999:warmup] [--iw 64] [--set train.KEY=VALUE ...] [--run DIR] [--json OUT]

A spec with BatchNorm in its nets shows the statistics question (runtime/ema.py: the averaged model
keeps the live running statistics): ``--spec`` one whose nets are ``dense_attention``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def _ema(text: str) -> tuple[float, bool]:
    """``DECAY`` or ``DECAY:warmup`` -> (decay, warm-up), else a usage error."""
    d, _, w = text.partition(":")
    try:
        decay = float(d)
    except ValueError:
        decay = -1.0
    if not 0.0 <= decay < 1.0 or w not in ("", "warmup"):
        raise argparse.ArgumentTypeError(f"expected DECAY or DECAY:warmup with 0 <= DECAY < 1; got {text!r}")
    return decay, bool(w)


def main() -> None:
    from augflow_dsl.cli.common import add_set_flag
    from augflow_dsl.language.evaluate import split_overrides
    from augflow_dsl.language.load import load
    from augflow_dsl.runtime import batches
    from augflow_dsl.runtime.data import open_dataset
    from augflow_dsl.runtime.ema import EMA
    from augflow_dsl.runtime.scoring import evaluate
    from augflow_dsl.runtime.step import TrainHooks
    from augflow_dsl.runtime.train import Trainer, TrainOptions

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(Path(__file__).resolve().parents[1] / "specs" / "digits-small.flow"))
    ap.add_argument("--steps", type=int, default=None, help="default: the spec's train block")
    ap.add_argument("--eval-every", type=int, default=69)
    ap.add_argument("--ema", nargs="+", type=_ema, default=[(0.99, False), (0.99, True), (0.999, True)],
                    metavar="DECAY[:warmup]", help="the EMAs kept beside the run (default: 0.99 0.99:warmup 0.999:warmup)")
    ap.add_argument("--iw", type=int, default=64, help="importance samples of the final evaluation (0: none)")
    add_set_flag(ap)
    ap.add_argument("--update-bn", type=int, default=0, metavar="BATCHES",
                    help="also score each EMA with its BatchNorm statistics recomputed on this many training "
                         "batches (torch.optim.swa_utils.update_bn) instead of the live ones")
    ap.add_argument("--run", default=None, help="run folder (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    variables, train_over = split_overrides(args.set)
    spec = load(args.spec, variables)
    source = open_dataset(spec.data, None, False, spec.train.seed)
    test = batches.stack([source.test[i] for i in range(len(source.test))])
    rows: list[dict] = []
    extra: dict[str, EMA] = {}

    class Hooks(TrainHooks):
        def after_update(self, step, model, params):
            if not extra:
                for decay, warmup in args.ema:
                    extra[f"ema {decay}" + (" warm-up" if warmup else "")] = EMA(model, decay, warmup=warmup)
            for ema in extra.values():
                ema.update(model)

        def after_step(self, step):
            if step % args.eval_every == 0 or step == trainer_total[0]:
                score(step, 1)

    def recomputed(net):
        """A copy of ``net`` with its BatchNorm statistics measured anew for its own weights."""
        import copy
        g = torch.Generator().manual_seed(99)
        idx = torch.randperm(len(source.train), generator=g)[:64 * args.update_bn].view(args.update_bn, 64)
        data = [batches.split(batches.stack([source.train[int(i)] for i in row]))[0] for row in idx]
        twin = copy.deepcopy(net)
        with torch.random.fork_rng():
            torch.manual_seed(7)
            torch.optim.swa_utils.update_bn(data, twin)
        return twin.eval()

    def score(step: int, samples: int) -> None:
        row = {"step": step, "samples": samples}
        nets = {"raw": model_ref[0], **{k: v.module for k, v in extra.items()}}
        if args.update_bn:
            for k, v in extra.items():
                nets[f"{k} +bn"] = recomputed(v.module)
        for name, net in nets.items():
            r = evaluate(net, test, samples=samples, batch=64, seed=1234 + step)
            row[name] = r.elbo_bpd if samples == 1 else r.iw_bpd
        rows.append(row)
        print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)

    model_ref: list = [None]
    trainer_total: list = [None]
    run = args.run or tempfile.mkdtemp(prefix="ema-vs-raw-")
    opts = TrainOptions(run=run, steps=args.steps, log_every=50, eval_every=10 ** 9, final_eval=False,
                        checkpoint_every=10 ** 9, tensorboard=False, sample_n=0)
    trainer = Trainer(spec, variables, train_over, opts, hooks=Hooks())
    orig_loop = trainer._loop

    def loop(model, *a, **kw):  # the run's model and length, for the hooks
        model_ref[0], trainer_total[0] = model, kw["total"]
        return orig_loop(model, *a, **kw)
    trainer._loop = loop
    t0 = time.perf_counter()
    result = trainer.run()
    if args.iw > 1:
        score(result.step, args.iw)
    print(f"\n{spec.name}: {result.step} steps in {time.perf_counter() - t0:.0f} s; test bits/dim "
          f"({len(test)} images), lower is better")
    names = [k for k in rows[0] if k not in ("step", "samples")]
    print(f"{'step':>6}{'S':>4}" + "".join(f"{n:>20}" for n in names))
    for r in rows:
        print(f"{r['step']:>6}{r['samples']:>4}" + "".join(f"{r[n]:>20.4f}" for n in names))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
