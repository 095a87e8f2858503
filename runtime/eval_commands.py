"""``augflow-dsl eval`` and ``augflow-dsl sample``: a trained run or checkpoint -> bits/dim, FID,
sample grids. torch is imported only when one of them runs.

Exit codes: 0 done; 1 a bad checkpoint, spec, data set, weights file or output path (a message,
never a traceback); 2 usage (argparse, or a device that is not there).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_commands(sub, common) -> None:  # noqa: ARG001 - eval/sample take the spec from the checkpoint
    from ..cli.common import positive_int

    p = sub.add_parser("eval", help="bits/dim (ELBO and importance-weighted) and FID of a run or checkpoint")
    p.add_argument("run", metavar="RUN_OR_CKPT", help="a run folder (its checkpoints/last.pt) or a checkpoint file")
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
    p.add_argument("--temperature", type=_temperature, default=1.0, help="sampling temperature for FID (1.0)")
    _shared(p)
    p.set_defaults(func=lambda a: _guarded(cmd_eval, a))

    p = sub.add_parser("sample", help="draw samples from a run or checkpoint: a PNG grid (scatter plot for "
                                      "vector data), optionally an .npz")
    p.add_argument("run", metavar="RUN_OR_CKPT", help="a run folder (its checkpoints/last.pt) or a checkpoint file")
    p.add_argument("--n", type=positive_int, default=64, help="number of samples (64)")
    p.add_argument("--temperature", type=_temperature, default=1.0, help="prior temperature (1.0; e.g. 0.8)")
    p.add_argument("--out", required=True, metavar="PNG", help="the image to write")
    p.add_argument("--npz", metavar="FILE", default=None, help="also write the samples (uint8 levels) to FILE")
    p.add_argument("--nrow", type=positive_int, default=None, help="images per grid row (default: near-square)")
    p.add_argument("--batch", type=positive_int, default=64, help="samples per inverse pass (64)")
    _shared(p)
    p.set_defaults(func=lambda a: _guarded(cmd_sample, a))


def _shared(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-ema", dest="ema", action="store_false",
                   help="use the trained weights even when the checkpoint has EMA weights")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    p.add_argument("--data-root", default=None, help="where data sets are read from (and downloaded to)")
    p.add_argument("--download", action="store_true", help="download a missing torchvision data set")
    p.add_argument("--seed", type=int, default=0, help="seed of the dequantization / sampling noise (0)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def _temperature(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        t = float("nan")
    if not t > 0 or t == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0; got {text!r}")
    return t


class _Usage(Exception):
    pass


def _console():
    from rich.console import Console
    return Console(stderr=True, highlight=False)


def _stdout():
    from rich.console import Console
    return Console(highlight=False)


def _guarded(fn, args) -> int:
    """Run a command; a user's mistake becomes a one-line message and exit 1 (2 for usage)."""
    from ..errors import SpecError
    from .checkpoint import CheckpointError
    from .data import DataError
    from .fid import FIDError
    err = _console()
    try:
        return fn(args, err)
    except _Usage as e:
        err.print(f"usage error: {e}", markup=False, soft_wrap=True)
        return 2
    except (SpecError, CheckpointError, DataError, FIDError) as e:
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        return 1


def _load(args, err):
    """(model on the device, spec, checkpoint meta)."""
    import torch

    from .checkpoint import load_model

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise _Usage(f"--device {args.device} but no CUDA device is available")
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        raise _Usage(f"--device {args.device}: {e}") from None
    model, spec, meta = load_model(args.run, ema=args.ema, map_location="cpu")
    return model.to(device), spec, meta


def _open_split(spec, meta: dict, args):
    from .data import open_dataset
    seed = int((meta.get("train") or {}).get("seed", 0))
    source = open_dataset(spec.data, args.data_root, args.download, seed)
    return source.train if args.split == "train" else source.test


def _progress(err, show: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("left"),
                    TimeRemainingColumn(), console=err, disable=not show, transient=False)


def cmd_eval(args, err) -> int:
    import time

    from .scoring import evaluate
    from .fid import FIDError, check_fid_data, check_weights, fid
    from .sampling import generate

    model, spec, meta = _load(args, err)
    if args.fid is not None:
        check_fid_data(tuple(spec.data.shape), spec.data.bits)  # refuse before any work
        if args.inception_weights is not None:
            if not Path(args.inception_weights).is_file():
                raise FIDError(f"no such Inception weights file: {args.inception_weights} (--inception-weights)")
            check_weights(args.inception_weights)
        if args.fid < 2:
            raise _Usage("--fid needs N >= 2 images (FID compares two covariance matrices)")
    data = _open_split(spec, meta, args)
    show = not args.json and err.is_terminal
    out: dict[str, Any] = {"checkpoint": meta["path"], "name": spec.name, "step": meta.get("step"),
                           "weights": meta.get("weights"), "split": args.split}
    with _progress(err, show) as bar:
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
        _eval_table(out, _stdout())
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


def cmd_sample(args, err) -> int:
    import time

    from .sampling import generate, save_grid, save_npz, save_scatter

    for flag, path in (("--out", args.out), ("--npz", args.npz)):
        if path is not None and not Path(path).parent.is_dir():
            err.print(f"error: {flag} {path}: no such folder {Path(path).parent}", markup=False)
            return 1
    model, spec, meta = _load(args, err)
    show = not args.json and err.is_terminal
    start = time.perf_counter()
    with _progress(err, show) as bar:
        task = bar.add_task(f"{spec.name} sampling", total=args.n, info="")

        def on_sample(done: int, total: int) -> None:
            rate = done / max(time.perf_counter() - start, 1e-9)
            bar.update(task, completed=done, total=total, info=f"{rate:.1f} img/s")

        x = generate(model, args.n, temperature=args.temperature, batch=args.batch, seed=args.seed,
                     progress=on_sample)
    seconds = time.perf_counter() - start
    try:
        if x.dim() == 4:
            save_grid(x, args.out, spec.data.bits, args.nrow)
        else:
            reference = None
            try:  # the data beside the samples when it can be had without a download
                ref = _open_split(spec, meta, argparse.Namespace(**{**vars(args), "split": "test"}))
                import torch
                reference = torch.stack([ref[i] for i in range(min(len(ref), max(args.n, 2000)))])
            except Exception:  # noqa: BLE001 - the plot is still useful without the data panel
                reference = None
            save_scatter(x, args.out, reference, title=f"{spec.name}: T = {args.temperature:g}")
        if args.npz:
            save_npz(x, args.npz, spec.data.bits)
    except OSError as e:
        err.print(f"error: cannot write {e.filename or args.out}: {e.strerror or e}", markup=False)
        return 1
    except ValueError as e:  # PIL / matplotlib: an image format they cannot write
        err.print(f"error: cannot write {args.out}: {e} (use a .png file name)", markup=False)
        return 1
    out = {"checkpoint": meta["path"], "name": spec.name, "step": meta.get("step"), "weights": meta.get("weights"),
           "n": args.n, "temperature": args.temperature, "out": args.out, "npz": args.npz, "seconds": seconds,
           "images_per_s": args.n / max(seconds, 1e-9), "shape": list(x.shape[1:]),
           "finite": bool(x.isfinite().all())}
    if args.json:
        print(json.dumps(out))
    else:
        from rich.table import Table
        t = Table(title=f"{spec.name}: {args.n} samples", show_header=False)
        t.add_column("")
        t.add_column("", justify="right")
        for k, v in (("checkpoint", out["checkpoint"]), ("weights", str(out["weights"])),
                     ("temperature", f"{args.temperature:g}"), ("image", args.out), ("npz", args.npz or "-"),
                     ("images/s", f"{out['images_per_s']:.1f}"), ("time", f"{seconds:.1f} s")):
            t.add_row(k, v)
        _stdout().print(t)
    return 0


__all__ = ["add_commands", "cmd_eval", "cmd_sample"]
