"""Op names live in the registry (augflow_dsl/ops/) and in specs, nowhere else in the package:
no module outside ops/ routes on, builds or defaults to an op by its name.

The scan reads every string literal of augflow_dsl/ outside ops/ (docstrings excepted: they
name ops for the reader, e.g. which op a layer implements, and route nothing) and fails on one
equal to a registered op's name. ALLOWED lists the literals that spell an op's name but mean
something else, each with what it means.
"""
from __future__ import annotations

import ast
from pathlib import Path

import augflow_dsl.ops  # noqa: F401  (registers every op)
from augflow_dsl.ops.registry import REGISTRY

PACKAGE = Path(__file__).resolve().parents[1] / "augflow_dsl"

ALLOWED = {
    ("graph/schema.py", "input"): "INPUT, the id and role of the graph's source node (graph namespace: "
                                "check --json and the graph export show it)",
    ("layers/coupling.py", "sigmoid"): "a value of affine_coupling's 'scale' argument (Glow's log-sigmoid scale)",
    ("language/values.py", "input"): "the 'input' key of pydantic's validation-error dicts",
    ("cli/compile.py", "layers"): "a column header of the compile table (layers per stage)",
    ("interop/denseflow.py", "shift"): "the suffix of the DenseFlow code's ActNorm tensor names ('...shift')",
}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def op_name_literals(names: set[str]) -> list[tuple[str, int, str]]:
    """(file relative to the package, line, literal) of every non-docstring string literal outside
    ops/ that equals one of ``names``."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("ops/"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
                    and node.value in names):
                found.append((rel, node.lineno, node.value))
    return found


def test_op_names_appear_only_in_ops():
    bad = [(f, line, s) for f, line, s in op_name_literals(set(REGISTRY)) if (f, s) not in ALLOWED]
    assert not bad, "op names hard-coded outside augflow_dsl/ops/: " + ", ".join(
        f"{f}:{line} {s!r}" for f, line, s in bad)


def test_allowed_literals_still_exist():
    """An allowance that no longer matches anything is removed, so the list stays honest."""
    present = {(f, s) for f, _, s in op_name_literals(set(REGISTRY))}
    assert set(ALLOWED) <= present, sorted(set(ALLOWED) - present)


def test_the_scan_finds_a_literal():
    """The scan itself works: it sees a literal that is there (the role constant of graph/schema.py)."""
    assert ("graph/schema.py", "input") in {(f, s) for f, _, s in op_name_literals({"input"})}
