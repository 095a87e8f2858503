"""The torch-side commands (compile, bench); torch is imported only when one runs."""
from __future__ import annotations


def add_commands(sub, common) -> None:
    from ..cli.common import positive_int

    p = sub.add_parser("compile", help="build the PyTorch module and report it")
    p.add_argument("spec")
    p.add_argument("--out", help="save the module (state and spec text) to this file")
    p.add_argument("--train", action="store_true", help="... and train it (the flags of 'augflow-dsl train')")
    from ..runtime.commands import add_train_flags
    add_train_flags(p)
    common(p)
    p.set_defaults(func=lambda a: _run("augflow_dsl.runtime.commands", "main_compile_train", a) if a.train
                   else _run("augflow_dsl.compiler.commands", "cmd_compile", a))

    p = sub.add_parser("bench", help="time forward+backward and sampling")
    p.add_argument("spec")
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--compile", action="store_true", help="torch.compile every coupling/context net (regional compilation)")
    p.add_argument("--channels-last", action="store_true",
                   help="channels_last memory format for the whole model and the data "
                        "(the nets already run channels-last inside)")
    p.add_argument("--bf16", action="store_true",
                   help="run the coupling/context nets under bf16 autocast (log-dets and the mixture CDF stay "
                        "float32)")
    p.add_argument("--flops", action="store_true",
                   help="also count the FLOPs of each timed call and report the rate against this machine's "
                        "float32 matrix-multiply rate")
    p.add_argument("--json", action="store_true")
    common(p)
    p.set_defaults(func=lambda a: _run("augflow_dsl.compiler.commands", "cmd_bench", a))


def _run(module: str, name: str, args) -> int:
    import importlib
    return getattr(importlib.import_module(module), name)(args)
