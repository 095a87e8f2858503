"""What each plan step calls and draws (to name the step and op a failure comes from), the messages
of the failures, and :class:`ExportError`."""
from __future__ import annotations

from contextlib import contextmanager

from .noise import plan_pass, split_inputs, step_names

class ExportError(Exception):
    """A model that cannot be exported (the message names the step, the op and the reason), or a
    model file that cannot be read; ``code`` is the command's exit code (2: a usage error)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code



# ---------------------------------------------------------------------------------- what each step calls
class _Tracker:
    """Which plan step is running: each step's ``forward`` and ``inverse`` wrapped (instance
    attributes, put back as they were on exit) to set ``current``."""

    _MISSING = object()

    def __init__(self, model):
        self.model, self.current, self.saved = model, -1, []

    def __enter__(self):
        for i, layer in enumerate(self.model.steps):
            for name in ("forward", "inverse"):
                self.saved.append((layer, name, layer.__dict__.get(name, self._MISSING)))
                setattr(layer, name, self._wrap(i, getattr(layer, name)))
        return self

    def _wrap(self, i: int, fn):
        def run(*a, **k):
            before, self.current = self.current, i
            try:
                return fn(*a, **k)
            finally:
                self.current = before
        return run

    def __exit__(self, *exc):
        for layer, name, old in reversed(self.saved):
            if old is self._MISSING:
                layer.__dict__.pop(name, None)
            else:
                layer.__dict__[name] = old
        self.saved.clear()
        return False


def ops_by_step(model, what: str, args) -> tuple[dict, dict]:
    """({aten op overload: plan steps that call it}, the same for the calls that drew random
    numbers) over one eager pass of ``what`` on ``args`` (first input, y when conditional, then the
    noise, fed: the steps that draw through :func:`~augflow_dsl.layers.base.draw` call no random op). A call
    drew when it advanced the CPU generator (an op tagged as seeded, such as attention, may
    not: its dropout is off in eval mode)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from ...layers.base import NoiseFeed, feeding

    ops: dict = {}
    drew: dict = {}
    seeded = torch.Tag.nondeterministic_seeded

    with _Tracker(model) as tracker:
        class Log(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, a=(), k=None):
                ops.setdefault(func, set()).add(tracker.current)
                if seeded not in func.tags:
                    return func(*a, **(k or {}))
                before = torch.get_rng_state()
                out = func(*a, **(k or {}))
                if not torch.equal(before, torch.get_rng_state()):
                    drew.setdefault(func, set()).add(tracker.current)
                return out

        # grad mode on, as under torch.export: weight caches recompute, so their ops are seen too
        y, noise = split_inputs(model, args[1:])
        with torch.enable_grad(), feeding(NoiseFeed(noise)), Log():
            plan_pass(model, what, args[0], y, (args[0] if what == "log_prob" else noise[0]).shape[0])
    return ops, drew


def refuse_own_randomness(model, what: str, drew: dict) -> None:
    """A step that draws random numbers itself (not through ``draw``) would put a random-number
    generator into the graph: onnxruntime would draw its own noise, so the file is not a function
    of its inputs and cannot be checked against torch."""
    seeded = sorted((str(f), s) for f, s in drew.items())
    if seeded:
        op, steps = seeded[0]
        raise ExportError(f"cannot export {what}: {_describe_steps(model, steps)} draws random numbers itself "
                          f"({op}) instead of through augflow_dsl.layers.base.draw; in ONNX that noise would be "
                          f"drawn by the runtime, not given as an input, so the graph would not be a function of its "
                          f"inputs (route the draw through draw(self, kind, shape, like))")


def _describe_steps(model, steps) -> str:
    """'steps 1, 4, 7 (conv1x1, layer Conv1x1)', grouped by op and layer."""
    from ...layers.registry import op_of
    groups: dict[tuple[str, str], list[int]] = {}
    for i in sorted(s for s in steps if s >= 0):
        layer = model.steps[i]
        try:
            op = op_of(type(layer)).name
        except KeyError:
            op = "unregistered op"
        groups.setdefault((op, type(layer).__name__), []).append(i)
    parts = [f"step{'s' if len(ix) > 1 else ''} {', '.join(map(str, ix))} ({op}, layer {cls})"
             for (op, cls), ix in groups.items()]
    return "; ".join(parts) if parts else "the model outside its steps"


def failure_reason(e: BaseException) -> str:
    """The innermost cause's first line (the exporters wrap the real reason in advice)."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    return first[:400]


def conversion_failure(model, what: str, e: BaseException, ops: dict) -> str:
    """The message for a traced graph that does not translate to ONNX: the aten op, the steps
    that call it, the reason."""
    import re
    text = "\n".join(str(c) for c in _chain(e))
    m = re.search(r"op='([\w.]+)'", text) or re.search(r"target=torch\.ops\.([\w.]+)", text)
    reason = failure_reason(e)
    if m is None:
        return f"cannot export {what}: the ONNX translation failed: {reason}"
    op = m.group(1).removesuffix(".default")
    base = op.split(".")[-1]
    steps = set()
    for f, s in ops.items():
        name = str(f).split(".")[1] if "." in str(f) else str(f)
        if name == base or base.startswith(name + "_") or name.startswith(base + "_"):
            steps |= s
    where = f", used by {_describe_steps(model, steps)}," if steps else ""
    return f"cannot export {what}: {op}{where} has no ONNX translation: {reason}"


def _chain(e: BaseException):
    while e is not None:
        yield e
        e = e.__cause__



def step_of_traceback(model, e: BaseException) -> str:
    names = step_names(model)
    found = None
    tb = e.__traceback__
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self")
        if obj is not None and id(obj) in names:
            found = names[id(obj)]
        tb = tb.tb_next
    if found is None:
        return ""
    i, op, module = found
    return f"step {i} ({op}, module {module})"


@contextmanager
def quiet():
    """Silence the exporters' progress lines and reports (stdout, stderr: torch prints a traced
    graph when it meets a data-dependent branch), log records up to warnings and Python warnings:
    what matters comes back as a result or an exception, and the command reports it itself."""
    import contextlib
    import io
    import logging
    import warnings
    before = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(before)

