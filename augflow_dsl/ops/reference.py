"""The op reference, read from the registry: what ``augflow-dsl ops`` prints and docs/ops.md holds.

Every fact comes from the op's class: ``summary``, the docstring (what it computes),
``shape_rule``, ``equation``, and the pydantic ``Args`` schema (each argument's type,
constraints, default and ``description``) -- except its torch layer, which the op does not
name: the layer class declares its op with ``@implements`` (:mod:`augflow_dsl.layers.registry`).
The reference finds those declarations by reading the layers package's source (:func:`layer_paths`),
never importing it: pure Python, no torch, and ops stays below layers.

    python -m augflow_dsl.ops.reference > docs/ops.md    # the same as: augflow-dsl ops --markdown
"""
from __future__ import annotations

import ast
import inspect
import sys
from functools import cache
from pathlib import Path
import types
import typing
from dataclasses import asdict, dataclass

import annotated_types as at
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from . import REGISTRY
from .registry import (AUGMENT, BIJECTION, COMPOSITE, CONTEXT, DEQUANTIZER, DROP, NET, PRIOR, Op, OpCall,
                       QFlow)

REGENERATE = "augflow-dsl ops --markdown > docs/ops.md"

# the roles in the order a spec reads, with where an op of each may stand
ROLES: dict[str, str] = {
    BIJECTION: "flow layers: invertible, keep the number of dims; in `stages`, modules, q-network flows, "
               "`then` lists",
    AUGMENT: "augment points: append dims (`augment:` for input augmentation, a block's `augment:` for "
             "cross-unit coupling); the inverse drops them",
    DROP: "drops (factor-out): hand part of the tensor to a prior; in `stages`",
    DEQUANTIZER: "dequantizers: integer data -> continuous (`dequantize:`)",
    PRIOR: "priors: score the final latents (`prior:`, a q-network's `base:`)",
    NET: "conditioner nets: a coupling's `net:` or a cross-unit coupling's g-network",
    CONTEXT: "context nets: a q-network's `context:`, reading the conditioning data once",
    COMPOSITE: "composites: expand into other ops when the graph is built (in `stages`)",
}

_NO_LAYER = {COMPOSITE: "none: it expands into its units when the graph is built"}
_LAYERS_DIR = Path(__file__).resolve().parent.parent / "layers"
_LAYERS_PACKAGE = __package__.rsplit(".", 1)[0] + ".layers"  # "augflow_dsl.layers", also under `python -m`


def _ops_module(node: ast.ImportFrom, module: str) -> str | None:
    """The absolute module an ``ImportFrom`` in ``module`` reads (relative imports resolved)."""
    if not node.level:
        return node.module
    base = module.split(".")[:-node.level]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def layer_paths() -> dict[tuple[str, str], str]:
    """(op class module, op class name) -> "module:LayerClass" for every class in
    augflow_dsl/layers/ decorated ``@implements(op_defs.OpClass)`` or ``@implements(OpClass)``,
    read from the source with :mod:`ast` (the op class is resolved through the module's
    ``from ..ops import x as op_defs`` / ``from ..ops.x import OpClass`` imports)."""
    out: dict[tuple[str, str], str] = {}
    for path in sorted(_LAYERS_DIR.glob("*.py")):
        module = f"{_LAYERS_PACKAGE}.{path.stem}"
        tree = ast.parse(path.read_text(), str(path))
        modules: dict[str, str] = {}   # local alias -> ops module
        classes: dict[str, tuple[str, str]] = {}  # local name -> (ops module, class)
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                src = _ops_module(node, module)
                for a in node.names:
                    local = a.asname or a.name
                    if src and src.endswith(".ops"):
                        modules[local] = f"{src}.{a.name}"
                    elif src and ".ops." in src + ".":
                        classes[local] = (src, a.name)
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            for dec in node.decorator_list:
                if not (isinstance(dec, ast.Call) and getattr(dec.func, "id", getattr(dec.func, "attr", None))
                        == "implements" and dec.args):
                    continue
                target = dec.args[0]
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                        and target.value.id in modules:
                    out[(modules[target.value.id], target.attr)] = f"{module}:{node.name}"
                elif isinstance(target, ast.Name) and target.id in classes:
                    out[classes[target.id]] = f"{module}:{node.name}"
    return out


def layer_path(op: Op) -> str:
    """Where the op's torch layer lives ("module:Class"), or why it has none."""
    found = layer_paths().get((type(op).__module__, type(op).__name__))
    if found:
        return found
    return _NO_LAYER.get(op.role, "not in augflow_dsl.layers (an extension registers its own with @implements)")


@dataclass(frozen=True)
class ArgDoc:
    name: str
    type: str
    default: str  # "required" when there is none
    description: str


@dataclass(frozen=True)
class OpDoc:
    name: str
    role: str
    summary: str
    computes: str
    shape_rule: str
    equation: str
    layer: str
    arguments: tuple[ArgDoc, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def _type_name(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("none" if a is type(None) else _type_name(a) for a in args)
    if origin is list:
        return "list of ops" if args and args[0] is OpCall else "list"
    if origin is tuple and args and getattr(args[0], "__name__", "") == "NetLayerCall":
        return "list of net layers"
    if getattr(annotation, "__name__", "") == "NetLayerCall":
        return "net layer"
    if annotation is OpCall:
        return "op"
    if annotation is QFlow:
        return "q-network"
    return {int: "int", float: "number", bool: "boolean", str: "name"}.get(annotation, getattr(
        annotation, "__name__", str(annotation)))


def _constraints(field: FieldInfo) -> list[str]:
    out = []
    for m in field.metadata:
        for cls, sign in ((at.Gt, ">"), (at.Ge, ">="), (at.Lt, "<"), (at.Le, "<=")):
            if isinstance(m, cls):
                out.append(f"{sign} {getattr(m, cls.__name__.lower())}")
    return out


def _value(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, OpCall):
        return f"{v.op}()"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return str(v)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return _value(field.default_factory())
    if field.default is PydanticUndefined:
        return "required"
    return _value(field.default)


def _computes(op: Op) -> str:
    """The class docstring, its line breaks inside paragraphs undone, ``code`` as `code`."""
    doc = (inspect.getdoc(type(op)) or "").replace("``", "`")
    return "\n\n".join(" ".join(p.split()) for p in doc.split("\n\n") if p.strip())


def describe(name: str) -> OpDoc:
    """The reference of one registered op (KeyError for an unknown name)."""
    op = REGISTRY[name]
    args = tuple(ArgDoc(k, ", ".join([_type_name(f.annotation), *_constraints(f)]), _default(f),
                        f.description or "")
                 for k, f in op.Args.model_fields.items())
    return OpDoc(name=op.name, role=op.role, summary=op.summary, computes=_computes(op), shape_rule=op.shape_rule,
                 equation=op.equation, layer=layer_path(op), arguments=args)


def all_ops() -> list[OpDoc]:
    """Every registered op, grouped by role in :data:`ROLES` order, by name within a role."""
    order = {r: i for i, r in enumerate(ROLES)}
    return [describe(n) for n in sorted(REGISTRY, key=lambda n: (order.get(REGISTRY[n].role, len(order)), n))]


@dataclass(frozen=True)
class NetLayerDoc:
    name: str
    data: str  # image, vector or any
    summary: str
    arguments: tuple[ArgDoc, ...]


def net_layers() -> list[NetLayerDoc]:
    """Every net layer (:mod:`.net_list`: the layers a net written as a list is made of), by name."""
    from .net_list import NET_LAYERS
    return [NetLayerDoc(n, d.data, d.summary, tuple(
        ArgDoc(k, ", ".join([_type_name(f.annotation), *_constraints(f)]), _default(f), f.description or "")
        for k, f in d.Args.model_fields.items())) for n, d in sorted(NET_LAYERS.items())]


def _net_layers_markdown() -> list[str]:
    out = ["", "## net layers", "",
           "What a net written as a list is made of (`net NAME(params): [conv(3, f), relu, zero_conv(3)]`, or a "
           "coupling's `net: [...]`; the op [`layers`](#layers)). Their own namespace: `actnorm` here is the net "
           "layer, not the flow op. The first layer reads cat(x, context); `out` left out is the coupling's width, "
           "which the last layer must give.", "",
           "| net layer | data | arguments | summary |", "|---|---|---|---|"]
    for d in net_layers():
        args = "; ".join(f"`{a.name}` ({a.type}, {a.default})" for a in d.arguments) or "none"
        out.append(f"| `{d.name}` | {d.data} | {_cell(args)} | {_cell(d.summary)} |")
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown() -> str:
    """docs/ops.md: a table of contents, then one section per op."""
    docs = all_ops()
    out = ["# Op reference", "",
           f"Generated from the op registry (`augflow_dsl/ops/`) by `{REGENERATE}`; do not edit by hand "
           "(`tests/test_ops_reference.py` fails when it is out of date). The same text, one op at a time: "
           "`augflow-dsl ops NAME`.", "",
           "An op is written as `name` or `name(arg: value, ...)` (positional arguments fill the arguments in "
           "the order listed). Shapes are C x H x W for images and D for vectors, batch excluded.", "",
           "| op | role | summary |", "|---|---|---|"]
    out += [f"| [`{d.name}`](#{d.name}) | {d.role} | {_cell(d.summary)} |" for d in docs]
    role = None
    for d in docs:
        if d.role != role:
            role = d.role
            out += ["", f"## {role}", "", ROLES.get(role, ""), ""]
        out += [f"### {d.name}", "", f"{d.summary}.", ""]
        if d.arguments:
            out += ["| argument | type | default | description |", "|---|---|---|---|"]
            out += [f"| `{a.name}` | {_cell(a.type)} | {_cell(a.default)} | {_cell(a.description)} |"
                    for a in d.arguments]
        else:
            out += ["No arguments."]
        out += ["", f"**Computes.** {d.computes}", "", f"**Shape rule.** {d.shape_rule}", "",
                f"**Implements.** {d.equation}", "", f"**Torch layer.** `{d.layer}`", ""]
    out += _net_layers_markdown()
    return "\n".join(out).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
