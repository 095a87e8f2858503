"""``augflow-dsl sample RUN_OR_CKPT --out PNG``: draw samples from a run or checkpoint (a PNG
grid, a scatter plot for vector data), optionally an .npz. torch is imported only when it runs.

Exit codes as for ``eval``: 0 done; 1 a bad checkpoint, spec or output path; 2 usage.
"""
from __future__ import annotations

import json
from pathlib import Path

from .common import add_checkpoint_flags, positive_int, temperature


def register(sub) -> None:  # sample takes the spec from the checkpoint: no --set
    p = sub.add_parser("sample", help="draw samples from a run or checkpoint: a PNG grid (scatter plot for "
                                      "vector data), optionally an .npz")
    p.add_argument("run", metavar="RUN_OR_CKPT", help="a run folder (its checkpoints/last.pt) or a checkpoint file")
    p.add_argument("--n", type=positive_int, default=64, help="number of samples (64)")
    p.add_argument("--temperature", type=temperature, default=1.0, help="prior temperature (1.0; e.g. 0.8)")
    p.add_argument("--out", required=True, metavar="PNG", help="the image to write")
    p.add_argument("--npz", metavar="FILE", default=None, help="also write the samples (uint8 levels) to FILE")
    p.add_argument("--nrow", type=positive_int, default=None, help="images per grid row (default: near-square)")
    p.add_argument("--batch", type=positive_int, default=64, help="samples per inverse pass (64)")
    c = p.add_mutually_exclusive_group()
    c.add_argument("--label", type=int, default=None, metavar="K",
                   help="class-conditional model: every sample of class K")
    c.add_argument("--labels", type=_int_list, default=None, metavar="K,K,...",
                   help="class-conditional model: these labels in turn (default: every class in turn)")
    c.add_argument("--grid-by-class", action="store_true",
                   help="class-conditional model: one grid row per class, --nrow samples each (default 10)")
    c.add_argument("--context", type=_float_list, default=None, metavar="V,V,...",
                   help="context-conditional model: the context vector of every sample")
    add_checkpoint_flags(p)
    p.set_defaults(func=run)


def _int_list(text: str) -> list[int]:
    import argparse
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected labels such as 0,1,2; got {text!r}") from None


def _float_list(text: str) -> list[float]:
    import argparse
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers such as 0.5,-1,2; got {text!r}") from None


def _condition(args, model):
    """(y, nrow, n) of the samples to draw: the condition flags read against the model."""
    from ..runtime.sampling import class_rows, condition_for
    n, nrow = args.n, args.nrow
    if args.grid_by_class:
        cond = getattr(model, "condition", None) if getattr(model, "conditional", False) else None
        if cond is None or cond.classes is None:
            raise ValueError("--grid-by-class needs a class-conditional model (`condition: {classes: K}`)")
        nrow = nrow or 10
        n = cond.classes * nrow
        y = class_rows(model, cond.classes, nrow)
        return y, nrow, n
    return condition_for(model, n, label=args.label, labels=args.labels, context=args.context), nrow, n


def run(args) -> int:
    from .eval import guarded
    return guarded(_sample, args)


def _sample(args, err) -> int:
    import time

    from ..runtime.run_io import load_on_device, write_samples
    from ..runtime.sampling import generate
    from .common import progress_bar

    for flag, path in (("--out", args.out), ("--npz", args.npz)):
        if path is not None and not Path(path).parent.is_dir():
            err.print(f"error: {flag} {path}: no such folder {Path(path).parent}", markup=False)
            return 1
    model, spec, meta = load_on_device(args.run, args.device, args.ema)
    try:
        y, args.nrow, args.n = _condition(args, model)
    except ValueError as e:
        err.print(f"error: {e}", markup=False)
        return 1
    show = not args.json and err.is_terminal
    start = time.perf_counter()
    with progress_bar(err, show) as bar:
        task = bar.add_task(f"{spec.name} sampling", total=args.n, info="")

        def on_sample(done: int, total: int) -> None:
            rate = done / max(time.perf_counter() - start, 1e-9)
            bar.update(task, completed=done, total=total, info=f"{rate:.1f} img/s")

        x = generate(model, args.n, temperature=args.temperature, batch=args.batch, seed=args.seed,
                     progress=on_sample, y=y)
    seconds = time.perf_counter() - start
    try:
        write_samples(x, args.out, spec=spec, meta=meta, nrow=args.nrow, npz=args.npz,
                      temperature=args.temperature, data_root=args.data_root, download=args.download)
    except OSError as e:
        err.print(f"error: cannot write {e.filename or args.out}: {e.strerror or e}", markup=False)
        return 1
    except ValueError as e:  # PIL / matplotlib: an image format they cannot write
        err.print(f"error: cannot write {args.out}: {e} (use a .png file name)", markup=False)
        return 1
    out = {"checkpoint": meta["path"], "name": spec.name, "step": meta.get("step"), "weights": meta.get("weights"),
           "n": args.n, "temperature": args.temperature, "out": args.out, "npz": args.npz, "seconds": seconds,
           "images_per_s": args.n / max(seconds, 1e-9), "shape": list(x.shape[1:]),
           "finite": bool(x.isfinite().all()),
           "labels": None if y is None or y.is_floating_point() else sorted(set(y.tolist()))}
    if args.json:
        print(json.dumps(out))
    else:
        from ..errors import SafeConsole as Console
        from rich.table import Table
        t = Table(title=f"{spec.name}: {args.n} samples", show_header=False)
        t.add_column("")
        t.add_column("", justify="right")
        for k, v in (("checkpoint", out["checkpoint"]), ("weights", str(out["weights"])),
                     ("temperature", f"{args.temperature:g}"), ("image", args.out), ("npz", args.npz or "-"),
                     ("images/s", f"{out['images_per_s']:.1f}"), ("time", f"{seconds:.1f} s")):
            t.add_row(k, v)
        Console(highlight=False).print(t)
    return 0
