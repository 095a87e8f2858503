"""The op registry: one definition per op, looked up by name.

An op definition declares, in one place:

* ``name`` and ``role`` (where it may stand in a flow: a bijection, an augment point,
  a drop, a coupling net, a context net, a prior, a dequantizer, a composite block);
* ``Args``: its argument schema, a pydantic model (unknown or ill-typed arguments are
  refused with the argument's name);
* its shape rule, parameter formula and multiply-accumulate formula, all pure Python,
  so that ``check`` never imports torch; nets, context nets and a drop's prior conv give
  instead a layer description (``describe``, :mod:`.net_descriptions`) that both formulas and the
  torch module derive from;
* ``memory``: what it keeps for the backward pass per example (:class:`~.net_descriptions.Kept`), which
  ``augflow-dsl check --memory`` adds up (:mod:`augflow_dsl.graph.memory`); a net's derives from
  its layer description;
* its documentation: ``summary`` (one line), the class docstring (what it computes),
  ``shape_rule`` (in words), ``equation`` (the paper / reference code it implements) and a
  ``description`` on each argument's Field; :mod:`.reference` renders them
  (``augflow-dsl ops``, docs/ops.md).

An op does not name its torch layer: the layer class declares the op it implements
(``@implements(OpClass)``, :mod:`augflow_dsl.layers.registry`), and the compiler asks
``augflow_dsl.layers.layer_of(op)``. Defining the class with ``@register`` in any module of this
package is enough: importing :mod:`augflow_dsl.ops` imports every module of it.

The graph builder, the cost report and the compiler read these definitions; adding an
op touches neither the grammar nor any if-chain.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

from .net_descriptions import Act, Kept, Net, Precision
from .regions import Region
from .supports import REAL, Support

Shape = tuple[int, ...]

# roles
BIJECTION = "bijection"    # invertible, same number of dims in and out
AUGMENT = "augment"        # appends dims (noise or q-samples); its inverse drops them
DROP = "drop"              # hands part of its input to a prior (factor-out); inverse samples it
NET = "net"                # a conditioner: a coupling net or a cross-unit g-network
CONTEXT = "context"        # the context net of a q-network: reads the data, feeds conditioners
PRIOR = "prior"            # a density that scores dims
DEQUANTIZER = "dequantizer"
COMPOSITE = "composite"    # expands into other ops (a DenseFlow block)

# how an augment point or a dequantizer scores the dims it draws (``Op.scored_by``)
SCORED_BY_Q = "q"          # a q-network's log q (VFlow's input augmentation, variational dequantization)
SCORED_BY_NET = "net"      # its own conditioner emits a mean and a log-scale per drawn dim (DenseFlow eq. 9)
SCORED_BY_FIXED = "fixed"  # a fixed density, nothing in the graph (uniform U[0, 1), a standard normal)

# where an augment point may stand (``Op.site``)
AUGMENT_AT_INPUT = "the spec's 'augment:'"   # once, after dequantization (VFlow)
AUGMENT_AT_BLOCK = "a block's 'augment:'"    # between the units of a block, reading earlier outputs (DenseFlow)


class OpShapeError(ValueError):
    """An op cannot take its input shape; the message gives the numbers."""


class OpArgs(BaseModel):
    """Base of every op's argument schema: no unknown arguments, values frozen. The language's
    ``none`` (None) is read as the choice "none" where a Literal argument offers it
    (``actnorm(split: none)``, ``conv_attention(position: none)``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True, defer_build=True)

    @model_validator(mode="before")
    @classmethod
    def _none_choice(cls, data):
        if isinstance(data, dict):
            for k, v in data.items():
                info = cls.model_fields.get(k)
                if v is None and info is not None and get_origin(info.annotation) is Literal \
                        and "none" in get_args(info.annotation):
                    data = {**data, k: "none"}
        return data


@dataclass(frozen=True, eq=False)
class OpCall:
    """An op applied with validated arguments, as it appears in a typed spec."""

    op: str
    args: Any  # the op's Args instance
    loc: Any = None  # errors.Loc
    origin: str = ""  # e.g. "module glow" when it came from a definition

    @property
    def definition(self) -> "Op":
        return get(self.op)

    def describe(self) -> str:
        return self.op


@dataclass(frozen=True, eq=False)
class QFlow:
    """A named conditional flow q(v | x) (a q-network): ``base`` noise pushed through ``flow``
    (written in the sampling direction, noise -> v), its couplings conditioned on
    ``context`` (a context net reading x)."""

    name: str
    flow: tuple[OpCall, ...]
    base: OpCall
    context: OpCall | None = None
    loc: Any = None


@dataclass(frozen=True)
class NetIO:
    """What a conditioner net is asked to compute: c_in -> c_out channels at h x w,
    optionally reading a context of ``context`` channels at the same resolution.
    ``h = w = 0`` for vector data (then c_in and c_out are features)."""

    c_in: int
    c_out: int
    h: int = 0
    w: int = 0
    context: int = 0

    @property
    def positions(self) -> int:
        return max(self.h, 1) * max(self.w, 1)


@dataclass(frozen=True)
class MemoryIn:
    """What an op's memory rule is told besides its arguments and shapes: the element sizes, what
    each of its conditioner nets keeps (by slot; a net that keeps its input keeps a view of the
    op's input, or of the context the plan hands it), and, for a prior, whether it is a
    q-network's base (it samples with rsample) rather than the density of the model's latents."""

    precision: Precision = Precision()
    nets: dict[str, Kept] = field(default_factory=dict)
    base: bool = False


_TOTALS: dict[tuple, tuple[int, int]] = {}


def _described_totals(op: "Op", a, where) -> tuple[int, int]:
    """(parameters, MACs) of ``op.describe(a, where)``, remembered per (op, arguments, shape or
    NetIO): a model repeats the same module many times, and ``solve`` counts many graphs."""
    key = (type(op), a, where)
    try:
        got = _TOTALS.get(key)
    except TypeError:  # arguments holding an unhashable value: no memo
        return op.describe(a, where)._totals()
    if got is None:
        if len(_TOTALS) >= 20_000:
            _TOTALS.clear()
        got = _TOTALS[key] = op.describe(a, where)._totals()
    return got


@dataclass(frozen=True)
class OpEnv:
    """What the graph builder tells an op beyond its input shape."""

    context: Shape | None = None  # shape of the q-network's context, when inside one; what a cross-unit g reads
    bits: int | None = None  # the bit depth of the integer data a dequantizer reads
    condition: int | None = None  # channels of the condition a conditioned net reads (None: the spec declares none)
    condition_in: int | None = None  # features of the raw condition (one-hot K, or vector D) a conditional prior reads


class Op:
    """Base of op definitions; subclasses set the class attributes and formulas."""

    name: ClassVar[str]
    role: ClassVar[str]
    Args: ClassVar[type[OpArgs]] = OpArgs
    equation: ClassVar[str] = ""    # the paper equation / reference file:line it implements
    shape_rule: ClassVar[str] = ""  # its shape rule in words (out_shape is the rule itself)
    summary: ClassVar[str] = ""
    site: ClassVar[str | None] = None  # augment points: AUGMENT_AT_INPUT or AUGMENT_AT_BLOCK
    scored_by: ClassVar[str] = SCORED_BY_Q  # augment points, dequantizers: SCORED_BY_Q, _NET or _FIXED

    # --- pure-Python rules -----------------------------------------------------------
    def out_shape(self, a, shape: Shape, env: OpEnv) -> Shape:
        return shape

    def in_shape(self, a, shape: Shape, env: OpEnv) -> Shape:
        """The input shape that gives output ``shape`` (for q-flows, inferred backwards)."""
        return shape

    def describe(self, a, shape: Shape) -> Net:
        """The layers the op holds outside its conditioner nets (a context net, a drop's prior
        conv; :mod:`.net_descriptions`); ``params`` and ``macs`` derive from it unless overridden."""
        return Net()

    def params(self, a, shape: Shape, env: OpEnv) -> int:
        return _described_totals(self, a, shape)[0]

    def macs(self, a, shape: Shape, env: OpEnv) -> int:
        return _described_totals(self, a, shape)[1]

    def nets(self, a, shape: Shape, env: OpEnv) -> dict[str, tuple[OpCall, NetIO]]:
        """Conditioner nets this op owns, by slot name, with what each must compute."""
        return {}

    def reads_condition(self, a) -> bool:
        """Whether the op (its nets, or the density itself) reads the spec's ``condition:``; the graph
        draws an edge from the condition node to what reads it. Default: a ``condition: true`` argument."""
        return bool(getattr(a, "condition", False))

    def reads(self, a, shape: Shape) -> Region:
        """The region of its input the op's conditioner nets read (default: all of it)."""
        return Region.whole(shape)

    def unchanged(self, a, shape: Shape) -> Region | None:
        """The region of its input the op hands on unchanged (a coupling's identity part);
        None when it changes every element. The audit demands ``reads`` within it."""
        return None

    # --- how elements move (graph/coverage_audit.py) ---------------------------------------
    def moves(self, a, shape: Shape) -> list[int] | None:
        """For an op that only permutes elements within a shape (swap): output element k (flat,
        channel-major) is input element ``moves(...)[k]``. None: each element stays in place."""
        return None

    def mixes(self, a, shape: Shape) -> Region | None:
        """The region of its output whose every element the op itself (its nets aside) computes from
        more than one input element (a 1x1 convolution's channels at a position). None: none.
        The default, none, can only make the coverage audit warn, never hide an untouched element."""
        return None

    # --- supports (ops/supports.py): the sets inputs and outputs lie in ------------------
    def domain(self, a, bits: int | None) -> Support:
        """The set the op's input must lie in (``bits``: the data's bit depth)."""
        return REAL

    def image(self, a, s: Support) -> Support:
        """The set the output lies in when the input lies in ``s`` (a superset is fine)."""
        return REAL

    def inverse_domain(self, a) -> Support:
        """The set the op's inverse accepts (the sampling direction meets it)."""
        return REAL

    def inverse_image(self, a, s: Support) -> Support:
        """The set the inverse returns when its input lies in ``s``."""
        return REAL

    def domain_fix(self, a) -> str:
        """What to change when the input leaves ``domain`` (for the error message)."""
        return f"give '{self.name}' an input inside its domain"

    def inverse_fix(self, a) -> str:
        """What to change when, sampling, the inverse's input leaves ``inverse_domain``."""
        return f"'{self.name}' cannot stand where its inverse meets values outside {self.inverse_domain(a)}"

    def dims_added(self, a, shape: Shape, env: OpEnv) -> int:
        return 0

    # --- memory (graph/memory.py) --------------------------------------------------------
    def memory(self, a, shape: Shape, env: OpEnv, m: MemoryIn) -> Kept:
        """What the op keeps for the backward pass per example (:class:`~.net_descriptions.Kept`), its
        conditioner nets' and q-networks' own tensors excepted. Default: its input (as an
        elementwise product with a parameter keeps it), or what its nets keep of it."""
        return Kept(Act(math.prod(self.out_shape(a, shape, env)), m.precision.flow), input=True)

    def qnets(self, a, shape: Shape, env: OpEnv) -> dict[str, tuple["QFlow", Shape, str]]:
        """q-networks this op samples from, by slot: (q, shape of its sample, parameter group),
        each conditioned on the op's input; its layer receives them built, by slot."""
        return {}

    def dropped_density(self, a) -> str:
        """Drops: the name shown for the density that scores the dropped part."""
        return self.name


class NetOp(Op):
    """A conditioner net, described once by ``describe(a, io)`` (a :class:`NetIO` instead of a
    shape): its parameters, its MACs and its torch module all derive from that description."""

    role: ClassVar[str] = NET

    def describe(self, a, io: NetIO) -> Net:  # type: ignore[override]
        raise NotImplementedError

    def net_params(self, a, io: NetIO) -> int:
        return _described_totals(self, a, io)[0]

    def net_macs(self, a, io: NetIO) -> int:
        return _described_totals(self, a, io)[1]

    def net_memory(self, a, io: NetIO, p: Precision) -> Kept:
        """What the net keeps for the backward pass per example: its description's layers one after
        the other (:meth:`~.net_descriptions.Layer.kept`) on its input, a view of the op's input, or
        cat(x, context), a new tensor it counts itself, when it reads a context."""
        x = Act((io.c_in + io.context) * io.positions, p.flow)
        k = self.describe(a, io).kept(x, p)
        if io.context and k.input:
            return replace(k, own=k.own + x.bytes, input=False)
        return k

    def check_io(self, a, io: NetIO) -> None:
        """Raise OpShapeError when the net cannot compute ``io``."""


REGISTRY: dict[str, Op] = {}


def register(cls: type[Op]) -> type[Op]:
    if cls.name in REGISTRY:
        raise RuntimeError(f"op '{cls.name}' registered twice")
    REGISTRY[cls.name] = cls()
    return cls


def get(name: str) -> Op:
    return REGISTRY[name]


def names(role: str | None = None) -> list[str]:
    return sorted(n for n, op in REGISTRY.items() if role is None or op.role == role)


@dataclass
class Cost:
    params: int = 0
    macs: int = 0
    by_part: dict[str, int] = field(default_factory=dict)


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


OpList = Annotated[list[OpCall], BeforeValidator(_as_list)]
