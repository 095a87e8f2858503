"""``augflow-dsl import {denseflow,vflow} CKPT --spec SPEC --out OUT``: the authors' weights as an
augflow-dsl checkpoint. Exit 0 written, 1 a checkpoint or spec that does not fit (the message
names the first mismatched keys and shapes), 2 a usage error (missing spec file)."""
from __future__ import annotations

import sys
from pathlib import Path

from .common import add_set_flag


def register(sub) -> None:
    p = sub.add_parser("import", help="import the authors' DenseFlow or VFlow checkpoint into a spec",
                       description="Map every tensor of an authors' checkpoint onto the spec's parameters and "
                                   "buffers by name and write an augflow-dsl checkpoint (read by af.load_model, "
                                   "eval and sample).")
    p.add_argument("kind", choices=("denseflow", "vflow"))
    p.add_argument("checkpoint", help="DenseFlow: the .pt file; VFlow: the TensorFlow checkpoint prefix "
                                      "(model-N) or its folder")
    p.add_argument("--spec", required=True, help="the spec the weights fit (e.g. specs/denseflow-74-10.flow)")
    p.add_argument("--out", required=True, help="where to write the augflow-dsl checkpoint")
    p.add_argument("--trust-pickle", action="store_true",
                   help="DenseFlow: unpickle arbitrary Python objects in the file (only for files you trust)")
    add_set_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import SpecError
    from ..interop.importer import import_checkpoint, save_imported
    from ..interop.mapping import ImportMismatch

    if not Path(args.spec).is_file():
        print(f"error: no such spec file: {args.spec}", file=sys.stderr)
        return 2
    try:
        imp = import_checkpoint(args.kind, args.checkpoint, args.spec, args.set, trust_pickle=args.trust_pickle)
    except ImportMismatch as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except SpecError as e:
        print(str(e), file=sys.stderr)
        return 1
    try:
        save_imported(imp, args.out)
    except OSError as e:
        print(f"error: cannot write {args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    params = sum(p.numel() for p in imp.model.parameters())
    weights = "parameters and EMA" if imp.ema is not None else "parameters"
    print(f"{imp.kind}: {imp.tensors:,} reference tensors -> {imp.spec.name} ({params:,} parameters; {weights}); "
          f"wrote {args.out}")
    return 0
