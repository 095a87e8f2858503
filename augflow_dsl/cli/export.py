"""``augflow-dsl export MODEL_OR_SPEC --onnx FILE [--what log_prob|sample]``: the flags, a call of
:func:`augflow_dsl.tools.onnx_export.export_onnx` on the model :func:`~augflow_dsl.tools.onnx_export.load_source`
reads, what was written and the check's figures printed. Exit 0: exported (and, unless --no-verify,
within tolerance); 1: not exportable, an unreadable model or spec, or the check failed; 2: usage
(missing file or folder, --set on a saved model, the onnx packages not installed)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import EXIT_INVALID, EXIT_OK, EXIT_USAGE, add_set_flag, positive_int


def register(sub) -> None:
    from ..tools.onnx_export import TOLERANCE, WHAT  # no torch: the package imports it when a function runs

    p = sub.add_parser("export", help="ONNX export of log_prob or sampling, checked with onnxruntime",
                       description="Export a model's log-likelihood or its sampler to ONNX, its noise as named "
                                   "inputs (docs/export.md), and check the file with onnxruntime against torch.")
    p.add_argument("source", metavar="MODEL_OR_SPEC",
                   help="a .flow spec (fresh weights under --seed), a model saved by 'compile --out', "
                        "or a run folder / checkpoint")
    p.add_argument("--onnx", required=True, metavar="FILE", help="the ONNX file to write")
    p.add_argument("--what", choices=WHAT, default="log_prob", help="the function to export (default log_prob)")
    p.add_argument("--batch", type=positive_int, default=2, metavar="N",
                   help="batch size traced (default 2); the file's batch dimension is dynamic unless --static")
    p.add_argument("--static", action="store_true",
                   help="export for exactly --batch examples (about twice as fast to export)")
    p.add_argument("--seed", type=int, default=0, help="seed of a spec's fresh weights and of the example inputs")
    p.add_argument("--newton-iterations", type=positive_int, default=None, metavar="N",
                   help="fixed Newton iterations of the mixture coupling's inverse in the file (default 32)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the onnxruntime check against torch")
    p.add_argument("--tolerance", type=_tolerance, default=TOLERANCE,
                   help="the check's bound: relative for log_prob, absolute for samples (default 1e-4)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: inputs, outputs, the check's figures (or error)")
    add_set_flag(p)
    p.set_defaults(func=run)


def _tolerance(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0; got {text}")
    return v


def run(args: argparse.Namespace) -> int:
    from ..errors import SpecError, printable

    def fail(message: str, code: int, prefix: bool = True) -> int:
        print(printable(f"error: {message}" if prefix else message), file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "error": message, "exit": code}))
        return code

    if not Path(args.source).exists():
        return fail(f"no such model, run folder or spec: {args.source}", EXIT_USAGE)
    out = Path(args.onnx)
    if out.is_dir() or not out.absolute().parent.is_dir():
        return fail(f"cannot write {out}: " + ("it is a folder" if out.is_dir() else
                                               f"no such folder {out.absolute().parent}"), EXIT_USAGE)
    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if not _importable(m)]
    if missing:
        return fail(f"export needs {', '.join(missing)}: pip install 'augflow-dsl[onnx]'", EXIT_USAGE)
    from ..tools.onnx_export import ExportError, export_onnx, load_source

    try:
        model, origin = load_source(args.source, args.set, args.seed)
        result = export_onnx(model, out, args.what, args.batch, args.seed, args.newton_iterations, args.verify,
                             args.tolerance, dynamic=not args.static)
    except ExportError as e:
        return fail(str(e), e.code)
    except SpecError as e:  # file:line:col messages, as every command prints them
        return fail(str(e), EXIT_INVALID, prefix=False)
    except OSError as e:
        return fail(f"{e.filename or out}: {e.strerror or e}", EXIT_INVALID)
    ok = result.verify is None or result.verify["ok"]
    if args.json:
        print(json.dumps({"ok": ok, "source": origin} | result.as_json()))
    else:
        _print(result, origin)
    if not ok:
        print(f"error: onnxruntime and torch differ by more than {args.tolerance:g} (the file is written)",
              file=sys.stderr)
    return EXIT_OK if ok else EXIT_INVALID


def _importable(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


def _print(r, origin: str) -> None:
    from ..errors import printable
    print(printable(f"{r.model}: {r.what} exported to {r.path} from {origin}"))
    print(f"  ONNX opset {r.opset}, {r.nodes} nodes, batch {r.batch}"
          + (f"; weights in {r.weights_file}" if r.weights_file else "")
          + (f"; mixture-coupling inverse: {r.newton_iterations} fixed Newton iterations" if r.newton_iterations
             else ""))
    print("  inputs:")
    width = max(len(i["name"]) for i in r.inputs)
    for i in r.inputs:
        print(f"    {i['name']:<{width}}  [{', '.join(map(str, i['shape']))}]  {i['meaning']}")
    for o in r.outputs:
        print(f"  output: {o['name']}  [{', '.join(map(str, o['shape']))}]  {o['meaning']}")
    v = r.verify
    if v is None:
        print("  not checked (--no-verify)")
        return
    worst = v.get("max_rel_diff", v["max_abs_diff"])
    extra = f"; max |ort - torch| = {v['max_abs_diff']:.3g}" if "max_rel_diff" in v else ""
    levels = (f"; {v['levels_differing']} of {v['values']} values a level apart" if "levels_differing" in v
              else "")
    if v["nonfinite_torch"]:
        levels += (f"; {v['nonfinite_torch']} of {v['values']} values not finite in torch "
                   f"({'the same in' if v['nonfinite_agree'] else 'different from'} onnxruntime)")
    print(f"  onnxruntime vs torch on {v['batch']} {v.get('inputs', 'fresh examples')}: {v['measure']} = "
          f"{worst:.3g}{extra}{levels} "
          f"(tolerance {v['tolerance']:g}): {'ok' if v['ok'] else 'FAILED'}")
