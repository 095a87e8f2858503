"""``augflow-dsl eval RUN_OR_CKPT``: bits/dim (ELBO and importance-weighted) and FID of a run or
checkpoint. torch is imported only when it runs.

Exit codes: 0 done; 1 a bad checkpoint, spec, data set, weights file or output path (a message,
never a traceback); 2 usage (argparse, or a device that is not there).
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from .common import EXIT_INVALID, EXIT_USAGE, add_checkpoint_flags, positive_int, temperature


def add_eval_flags(p: argparse.ArgumentParser) -> None:
    """The flags of an evaluation (split, importance samples, batch, limit, FID), shared with sweep."""
    p.add_argument("--split", choices=("test", "train"), default="test", help="data split to score (test)")
    p.add_argument("--samples", type=positive_int, default=1, metavar="S",
                   help="importance samples per example (1: the one-sample ELBO only; e.g. 1000)")
    p.add_argument("--batch", type=positive_int, default=64,
                   help="examples per forward pass; bounds memory whatever S is (64)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N", help="score only the first N examples")
    p.add_argument("--fid", type=positive_int, default=None, metavar="N",
                   help="FID between N samples and the first N images of the split (torch-fidelity)")
    p.add_argument("--inception-weights", metavar="PATH", default=None,
                   help="local InceptionV3 weights in torch-fidelity's format (without it torch-fidelity "
                        "downloads its own once)")
    p.add_argument("--fid-layer", choices=("64", "192", "768", "2048"), default="2048",
                   help="Inception feature layer for FID (2048, the standard)")
    p.add_argument("--temperature", type=temperature, default=1.0, help="sampling temperature for FID (1.0)")
    p.add_argument("--data", metavar="PATH", default=None,
                   help="score your own data: an image folder or a .npz file (default: the run's own data, "
                        "or the spec's data set)")


def register(sub) -> None:  # eval takes the spec from the checkpoint: no --set
    p = sub.add_parser("eval", help="bits/dim (ELBO and importance-weighted) and FID of a run or checkpoint")
    p.add_argument("run", metavar="RUN_OR_CKPT", help="a run folder (its checkpoints/last.pt) or a checkpoint file")
    add_eval_flags(p)
    add_checkpoint_flags(p)
    p.set_defaults(func=run)


class Usage(Exception):
    """A usage error found after parsing (exit 2)."""


def guarded(fn, args) -> int:
    """Run ``fn(args, err)``; a user's mistake becomes a one-line message and exit 1 (2 for usage).
    Shared with ``sample``."""
    from ..errors import SafeConsole as Console

    from ..errors import SpecError
    from ..compiler.model_file import ModelFileError
    from ..runtime.data import DataError
    from ..runtime.run_io import DeviceUnavailable
    from ..runtime.fid import FIDError
    err = Console(stderr=True, highlight=False)
    try:
        return fn(args, err)
    except (Usage, DeviceUnavailable) as e:
        err.print(f"usage error: {e}", markup=False, soft_wrap=True)
        return EXIT_USAGE
    except (SpecError, ModelFileError, DataError, FIDError) as e:
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        return EXIT_INVALID


def run(args) -> int:
    return guarded(_eval, args)


def _eval(args, err) -> int:
    import time

    from ..runtime.launch import locate_data, run_data
    from ..runtime.run_io import check_fid_request, load_on_device, open_split
    from ..runtime.fid import fid
    from ..runtime.sampling import generate
    from ..runtime.scoring import evaluate
    from .common import progress_bar

    model, spec, meta = load_on_device(args.run, args.device, args.ema)
    spec = locate_data(spec, args.data or run_data(meta["path"]))
    if args.fid is not None:
        check_fid_request(spec, args.inception_weights)  # refuse before any work
        if args.fid < 2:
            raise Usage("--fid needs N >= 2 images (FID compares two covariance matrices)")
    data = open_split(spec, meta, args.split, args.data_root, args.download)
    show = not args.json and err.is_terminal
    out: dict[str, Any] = {"checkpoint": meta["path"], "name": spec.name, "step": meta.get("step"),
                           "weights": meta.get("weights"), "split": args.split}
    with progress_bar(err, show) as bar:
        task = bar.add_task(f"{spec.name} {args.split}", total=None, info="")

        def on_eval(done: int, total: int, s: dict) -> None:
            iw = f"  IW bpd {s['iw_bpd']:.4f}" if s.get("iw_bpd") is not None else ""
            bar.update(task, completed=done, total=total,
                       info=f"loss {s['loss']:.2f}  bpd {s['bpd']:.4f}{iw}  {s['images_per_s']:.1f} img/s")

        res = evaluate(model, data, samples=args.samples, batch=args.batch, limit=args.limit, seed=args.seed,
                       progress=on_eval)
        out.update(res.as_dict())
        if args.fid is not None:
            n = args.fid
            t0 = time.perf_counter()
            sample_task = bar.add_task("sampling", total=n, info="")
            fake = generate(model, n, temperature=args.temperature, batch=args.batch, seed=args.seed,
                            progress=lambda d, t: bar.update(sample_task, completed=d, total=t, info=""))
            fid_task = bar.add_task("FID (Inception)", total=None, info="")
            out["fid"] = fid(fake, data, bits=spec.data.bits, weights=args.inception_weights, batch=args.batch,
                             device=args.device, feature_layer=args.fid_layer, data_limit=n,
                             progress=lambda d, t: bar.update(fid_task, completed=d, total=t, info=""))
            out.update(fid_samples=n, fid_data=min(n, len(data)), fid_layer=args.fid_layer,
                       fid_temperature=args.temperature, fid_seconds=time.perf_counter() - t0)
    if args.json:
        print(json.dumps(out))
    else:
        from ..errors import SafeConsole as Console
        _eval_table(out, Console(highlight=False))
    return 0


def _eval_table(out: dict, console) -> None:
    from rich.table import Table

    t = Table(title=f"{out['name']}: {out['split']} split", show_header=False)
    t.add_column("")
    t.add_column("", justify="right")
    rows = [("checkpoint", out["checkpoint"]), ("step", f"{out['step']:,}" if out.get("step") is not None else "-"),
            ("weights", str(out.get("weights"))), ("examples", f"{out['n']:,}"),
            ("bits/dim, one-sample ELBO", f"{out['elbo_bpd']:.4f} ± {out['elbo_se']:.4f}")]
    if out.get("iw_bpd") is not None:
        rows.append((f"bits/dim, importance-weighted (S = {out['samples']:,})",
                     f"{out['iw_bpd']:.4f} ± {out['iw_se']:.4f}"))
    if out.get("fid") is not None:
        rows.append((f"FID ({out['fid_samples']:,} samples vs {out['fid_data']:,} images, pool {out['fid_layer']})",
                     f"{out['fid']:.3f}"))
    rows += [("images/s (forward passes)", f"{out['images_per_s']:.1f}"),
             ("time, bits/dim", f"{out['seconds']:.1f} s")]
    if out.get("fid") is not None:
        rows.append(("time, FID (sampling + Inception)", f"{out['fid_seconds']:.1f} s"))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    console.print("± is one standard error over the examples", style="dim")
