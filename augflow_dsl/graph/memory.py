"""A static estimate of peak training memory: ``augflow-dsl check SPEC --memory --batch N`` (the
command, its printing: :mod:`augflow_dsl.cli.memory`). Pure Python, no torch: everything comes
from the graph and the ops' memory rules.

The model is one steady-state step of the training runtime (runtime/train.py), in its order:
forward, ``zero_grad(set_to_none=True)``, backward, gradient norm and clip, optimizer step, EMA
update. Alive, in bytes:

* static: the parameters (float32), their gradients (the previous step's live through the forward:
  ``zero_grad`` runs after it), the optimizer's state (Adam, Adamax, AdamW: two tensors per
  parameter), the EMA copy when ``train: {ema: ...}``, and the batch;
* activations: what each step of the model chain and of its q-networks keeps for the backward pass
  (:meth:`~augflow_dsl.ops.registry.Op.memory`; nets and context nets through their layer
  descriptions, :meth:`~augflow_dsl.ops.net_descriptions.Layer.kept`), per example times N, plus the
  weight-sized tensors some keep per batch. A tensor several consumers keep is counted once, in the
  unit that made it: a step's output is kept when it keeps it or the next step keeps its input; a
  step whose output is (a view of) its input passes the same tensor on; a step that reads nothing
  needing a gradient and has no parameters keeps nothing;
* transients: in the backward, a unit holds the gradients of its largest tensor in and out (twice
  its largest tensor); the optimizer's foreach update (CUDA) one parameter-sized temporary.

Peak = the largest of: the end of the forward (static + every activation); the backward at each
unit, last first (static less the previous gradients + the activations not yet freed + the
gradients made for the units behind it + the unit's transient); the optimizer step (static + the
parameters' size). ``peak_at`` says which, ``peak_unit`` where; for the shipped specs at any batch
worth training it is the end of the forward. bf16 (``--precision bf16``, ``FlowModel.set_precision``):
the nets run under autocast (:class:`~augflow_dsl.ops.net_descriptions.Precision`); the flow's own
arithmetic stays float32.

Validated against what autograd saves (tests/test_memory.py) and against measured training-step
peaks on CPU (examples/bench_memory_estimate.py, docs/memory.md).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import networkx as nx
from pydantic import BaseModel, Field

from ..errors import SpecError
from ..ops.net_descriptions import Kept, Precision
from ..ops.registry import MemoryIn, OpEnv
from ..ops.shapes import numel
from ..language.evaluate import split_overrides
from ..language.models import Spec, TrainSpec
from . import schema as S
from .builder import step_path
from .check import CheckReport
from .pipeline import analyze
from .schema import INPUT, PARAMS, SAMPLE, EdgeInfo

PRECISIONS: dict[str, Precision] = {"fp32": Precision(4, 4, 4), "bf16": Precision(4, 2, 4),
                                    "bf16-cpu": Precision(4, 2, 2)}  # CPU autocast: exp, norms, softmax in bf16
OPTIMIZER_STATES: dict[str, int] = {"adam": 2, "adamax": 2, "adamw": 2}  # exp_avg and exp_avg_sq / exp_inf
PARAM_BYTES = 4  # parameters, gradients and optimizer state stay float32 (autocast keeps master weights)


# ----------------------------------------------------------------------------------------------
# the estimate
# ----------------------------------------------------------------------------------------------

class UnitMemory(BaseModel):
    """One unit (or q-network) of the estimate, in forward order; bytes at the estimate's batch."""

    unit: str
    activations: int = 0     # kept for the backward by the unit's steps
    cumulative: int = 0      # kept by this unit and every unit before it
    transient: int = 0       # the backward's extra tensors at this unit
    per_example: int = 0     # activations per example (without the per-batch part)


class FitAnswer(BaseModel):
    memory: int              # the budget, bytes
    batch: int               # the largest batch whose estimated peak fits (0: not even one example)
    peak: int                # the estimated peak at that batch (at batch 1 when none fits)


class MemoryEstimate(BaseModel):
    """What ``check --memory`` reports; ``--json`` prints this model (bytes throughout)."""

    name: str
    file: str
    batch: int
    precision: Literal["fp32", "bf16", "bf16-cpu"]
    optimizer: str
    ema: bool
    parameters: int          # count
    params: int              # bytes of the parameters
    grads: int
    optimizer_state: int
    ema_copy: int
    data: int
    static: int              # params + grads + optimizer state + EMA copy + data
    activations: int
    transient: int           # at the peak
    peak: int
    peak_at: Literal["end of forward", "backward", "optimizer step"]
    peak_unit: str           # the unit the forward ends with, or the backward is at
    units: list[UnitMemory] = Field(default_factory=list)
    fit: FitAnswer | None = None


@dataclass
class _Tensor:
    """A tensor of the chain: its bytes per example, the unit that made it, whether it is kept."""

    bytes: int
    unit: str
    kept: bool = False
    grad: bool = True  # requires grad: the batch and what is computed from it without parameters do not


@dataclass
class _Unit:
    """What a unit keeps: bytes per example and per batch, and its largest tensor per example."""

    per_example: int = 0
    fixed: int = 0
    largest: int = 0


@dataclass
class _Walk:
    """Activations of a graph, accumulated unit by unit in forward order: per example (what the
    rules say) and per batch (weight-sized tensors), so that any batch is one multiply-add."""

    g: nx.DiGraph
    p: Precision
    units: dict[str, _Unit] = field(default_factory=dict)
    tensors: list[_Tensor] = field(default_factory=list)

    def add(self, unit: str, k: Kept) -> None:
        u = self.units.setdefault(unit, _Unit())
        u.per_example += k.own
        u.fixed += k.fixed
        u.largest = max(u.largest, k.out.bytes)

    def tensor(self, nbytes: int, unit: str, kept: bool = False, grad: bool = True) -> _Tensor:
        t = _Tensor(nbytes, unit, kept, grad)
        self.tensors.append(t)
        return t

    def nets(self, node: str) -> dict[str, Kept]:
        """What each conditioner net of ``node`` keeps; their own tensors join the node's unit."""
        out = {}
        unit = S.node(self.g, node).unit
        for u, _ in S.in_edges(self.g, node, PARAMS):
            d = S.node(self.g, u)
            k = d.call.definition.net_memory(d.call.args, d.io, self.p)
            self.add(unit, Kept(k.out, own=k.own, fixed=k.fixed))
            out[d.slot] = k
        return out

    def step(self, node: str, x: _Tensor, outputs: dict[str, _Tensor], base: bool = False) -> _Tensor:
        """One step of a chain reading ``x``; returns its output tensor."""
        d = S.node(self.g, node)
        unit = d.unit
        qnets = [e for _, e in S.in_edges(self.g, node, SAMPLE)]
        for e in qnets:  # q-networks run inside the step, first
            self.qnet(e, x)
        call = d.call
        if not (x.grad or qnets or d.params_total or d.params):
            # nothing before it needs a gradient and it has no parameters: autograd keeps nothing
            k = call.definition.memory(call.args, tuple(d.shape_in), d.env or OpEnv(),
                                       MemoryIn(self.p, {}, base))
            self.add(unit, Kept(k.out))
            return x if k.passes_input else self.tensor(k.out.bytes, unit, grad=False)
        nets = self.nets(node)
        k = call.definition.memory(call.args, tuple(d.shape_in), d.env or OpEnv(),
                                   MemoryIn(self.p, nets, base))
        self.add(unit, k)
        if k.input:
            x.kept = True
        reads = d.reads
        if k.context and reads:
            if len(reads) == 1:  # the compiled step plan hands the one tensor itself (compiler/model.py)
                outputs[reads[0]].kept = True
            else:  # cat of the tensors it reads: a new tensor
                ctx = sum(numel(S.node(self.g, r).shape_out) for r in reads) * self.p.flow
                self.add(unit, Kept(k.out, own=ctx))
        if k.passes_input:
            return x
        if k.views_own:
            return self.tensor(0, unit)
        return self.tensor(k.out.bytes, unit, k.output)

    def qnet(self, edge: EdgeInfo, given: _Tensor) -> None:
        """A q-network sampling inside a step (``edge``: its sample edge): its context net reads
        the step's input, its base draws, its flow runs from the base's sample."""
        g, q = self.g, edge.q
        if q.context is not None:
            d = S.node(g, q.context)
            call = d.call
            k = call.definition.memory(call.args, tuple(d.shape_in), OpEnv(), MemoryIn(self.p))
            self.add(d.unit, k)
            if k.input:
                given.kept = True
        cur = self.step(q.base, self.tensor(0, S.node(g, q.base).unit, grad=False), {}, base=True)
        for n in q.flow:
            cur = self.step(n, cur, {})

    def run(self) -> list[tuple[str, _Unit]]:
        """The units in forward order, each with the kept tensors it made added."""
        outputs: dict[str, _Tensor] = {INPUT: self.tensor(0, INPUT, grad=False)}  # the batch: counted as data
        cur = outputs[INPUT]
        for n in step_path(self.g, INPUT):
            cur = self.step(n, cur, outputs)
            outputs[n] = cur
        for t in self.tensors:
            if t.kept and t.unit != INPUT:
                self.units.setdefault(t.unit, _Unit()).per_example += t.bytes
        return list(self.units.items())


# ----------------------------------------------------------------------------------------------
# entry points
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Model:
    """What the estimate needs of a checked spec."""

    spec: Spec
    g: nx.DiGraph
    report: CheckReport
    train: TrainSpec
    profiles: dict = field(default_factory=dict)  # precision -> the walk's units (batch-free)

    def profile(self, precision: str) -> list[tuple[str, _Unit]]:
        if precision not in self.profiles:
            self.profiles[precision] = _Walk(self.g, PRECISIONS[precision]).run()
        return self.profiles[precision]


def _load(spec: Spec | str, overrides=None) -> _Model:
    """Load (a path) with ``overrides`` (``NAME=VALUE`` strings or a mapping; ``train.KEY=VALUE``
    changes the ``train:`` block), build and check (:func:`~.pipeline.analyze`); raises SpecError
    for a spec that does not load (the loader's own error) or check."""
    variables, train_over = split_overrides(overrides)
    a = analyze(spec, variables)
    spec, g, report = a.spec, a.graph, a.report
    a.raise_if_invalid(f"{spec.file if spec else ''}: the spec is not valid, so there is no memory estimate")
    try:
        train = spec.train.merged(train_over)
    except ValueError as e:  # an unknown or ill-typed train.* key
        raise SpecError(f"{spec.file}: --set train.*: {e}") from None
    return _Model(spec, g, report, train)


def estimate(spec: Spec | str, batch: int | None = None, precision: str = "fp32", overrides=None,
             fit: int | None = None) -> MemoryEstimate:
    """The memory estimate of ``spec`` (a Spec or a path) at ``batch`` (default: its ``train.batch``);
    ``fit``: a budget in bytes, answered with the largest batch whose estimated peak fits."""
    m = _load(spec, overrides)
    if precision not in PRECISIONS:  # bf16-cpu: CPU's autocast op lists (tests, benchmarks)
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    batch = m.train.batch if batch is None else batch
    if batch < 1:
        raise ValueError(f"batch must be at least 1; got {batch}")
    out = _estimate(m, batch, precision)
    if fit is not None:
        out.fit = _fit(m, precision, fit)
    return out


def _estimate(m: _Model, batch: int, precision: str) -> MemoryEstimate:
    units, total = [], 0
    for name, u in m.profile(precision):
        acts = u.per_example * batch + u.fixed
        total += acts
        units.append(UnitMemory(unit=name, activations=acts, cumulative=total, per_example=u.per_example,
                                transient=2 * u.largest * batch))
    n_params = m.report.parameters.total
    params = n_params * PARAM_BYTES
    states = OPTIMIZER_STATES.get(m.train.optimizer, 2)
    ema = m.train.ema is not None
    data = batch * numel(m.spec.data.shape) * PARAM_BYTES
    static = params * (2 + states + ema) + data
    # end of forward: everything at once (the previous gradients are freed after the forward)
    last = units[-1].unit if units else INPUT
    peak, where, unit, transient = static + total, "end of forward", last, 0
    # backward, last unit first: its kept tensors still alive, gradients made for the units behind it
    grads_behind = 0
    unit_params = _unit_params(m.report)
    for u in reversed(units):
        at = static - params + u.cumulative + grads_behind + u.transient
        if at > peak:
            peak, where, unit, transient = at, "backward", u.unit, u.transient
        grads_behind += unit_params.get(u.unit, 0) * PARAM_BYTES
    step = static + params  # CUDA's foreach update: one parameter-sized temporary list
    if step > peak:
        peak, where, unit, transient = step, "optimizer step", last, step - static
    return MemoryEstimate(name=m.spec.name, file=m.spec.file, batch=batch, precision=precision,
                          optimizer=m.train.optimizer, ema=ema, parameters=n_params, params=params, grads=params,
                          optimizer_state=states * params, ema_copy=params if ema else 0, data=data, static=static,
                          activations=total, transient=transient, peak=peak, peak_at=where, peak_unit=unit,
                          units=units)


def _unit_params(report: CheckReport) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in report.nodes:
        out[r.unit] = out.get(r.unit, 0) + r.params
    return out


def _fit(m: _Model, precision: str, budget: int) -> FitAnswer:
    """The largest batch whose estimated peak is at most ``budget`` (the peak grows with the batch)."""
    def peak(n: int) -> int:
        return _estimate(m, n, precision).peak

    if peak(1) > budget:
        return FitAnswer(memory=budget, batch=0, peak=peak(1))
    lo, hi = 1, 2
    while peak(hi) <= budget:
        lo, hi = hi, hi * 2
        if hi > 1 << 40:
            break
    while hi - lo > 1:  # peak(lo) fits, peak(hi) does not
        mid = (lo + hi) // 2
        if peak(mid) <= budget:
            lo = mid
        else:
            hi = mid
    return FitAnswer(memory=budget, batch=lo, peak=peak(lo))


# ----------------------------------------------------------------------------------------------
# parsing
# ----------------------------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text: str) -> int:
    """``80GiB``, ``80 GB``, ``512MiB``, ``1.5TiB``, ``1000000`` (bytes) -> bytes. KiB/MiB/GiB/TiB
    (and K/M/G/T) are powers of 1024, KB/MB/GB/TB powers of 1000."""
    mt = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    if not mt or mt.group(2).lower() not in _UNITS:
        raise ValueError(f"'{text}' is not a memory size; write e.g. 80GiB, 80GB or 512MiB")
    value = float(mt.group(1)) * _UNITS[mt.group(2).lower()]
    if value < 1:
        raise ValueError(f"'{text}' is less than one byte")
    return int(value)
