"""The package's layers, read from the source with ``ast`` (no module is imported):

    errors < ops < language < graph < layers < compiler < runtime = interop < tools < cli

A module may import its own layer and any layer below it, never one above: every ``import`` and
``from ... import`` counts, at module level or inside a function (a function-local import is
still an arrow between layers; it only moves the cost to call time). ``runtime`` and ``interop``
share a rank but import neither one the other (neither needs to today: interop maps weights onto
the compiler's FlowModel and writes the compiler's model file; runtime reads that file). The
package root (``augflow_dsl/__init__.py``, the public API) and ``augflow_dsl/__main__.py`` may
import anything; only ``cli`` may import the root (``from .. import __version__``), which imports
language, graph and compiler and so stands above every layer but ``cli``.

Also: no import cycle between modules (function-local imports included), and no module over
500 lines. ``runtime/`` is installed as ``augflow_dsl.runtime``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "augflow_dsl"
LAYERS = ("errors", "ops", "language", "graph", "layers", "compiler", "runtime", "interop", "tools", "cli")
RANK = {name: i for i, name in enumerate(LAYERS)}
RANK["interop"] = RANK["runtime"]  # the same rank ...
SIBLINGS_APART = {("runtime", "interop"), ("interop", "runtime")}  # ... but neither imports the other
TOP = {PACKAGE, f"{PACKAGE}.__main__"}  # may import anything; only cli may read the root
MAX_LINES = 500

# Modules still over MAX_LINES while the restructuring is under way (paths relative to the repo
# root). The lead empties this list; a module that shrinks under the limit must leave it (the test
# fails on a stale entry, so the list only ever shrinks).
STILL_OVER_500: tuple[str, ...] = ()


def _sources() -> dict[str, Path]:
    """Module name -> file, for every module of augflow_dsl/ and runtime/."""
    out = {}
    for base, prefix in ((ROOT / PACKAGE, PACKAGE), (ROOT / "runtime", f"{PACKAGE}.runtime")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([prefix, *parts])] = path
    return out


SOURCES = _sources()


@pytest.fixture(autouse=True)
def _fresh_sources():
    """Re-read the module list for each test (files come and go while the tree is edited)."""
    SOURCES.clear()
    SOURCES.update(_sources())


def _is_package(module: str) -> bool:
    return SOURCES[module].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute name of a ``from`` import's module (relative ones resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _ours(name: str) -> str | None:
    """The module of ours that importing ``name`` reads (the longest known prefix), else None."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in SOURCES:
            return candidate
        parts.pop()
    return None


def imports(module: str) -> list[tuple[int, str]]:
    """(line, module of ours) for every import statement in ``module``, wherever it stands."""
    tree = ast.parse(SOURCES[module].read_text(), str(SOURCES[module]))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            src = _resolve(module, node)
            # `from pkg import sub` reads the module pkg.sub when there is one, else pkg itself
            names = [f"{src}.{alias.name}" if f"{src}.{alias.name}" in SOURCES else src for alias in node.names]
        else:
            continue
        for name in dict.fromkeys(names):
            target = _ours(name)
            if target is not None and target != module:
                found.append((node.lineno, target))
    return sorted(found)


def layer(module: str) -> str | None:
    """The layer a module belongs to (None for the package root and __main__)."""
    if module in TOP:
        return None
    return module.split(".")[1]


def _where(module: str, line: int) -> str:
    return f"{SOURCES[module].relative_to(ROOT)}:{line}"


def test_every_module_is_in_a_layer():
    stray = [str(SOURCES[m].relative_to(ROOT)) for m in SOURCES if m not in TOP and layer(m) not in RANK]
    assert not stray, f"modules outside every layer {LAYERS}: {stray}"


def test_no_module_imports_a_higher_layer():
    violations = []
    for module in SOURCES:
        mine = layer(module)
        if mine is None or mine not in RANK:
            continue
        for line, target in imports(module):
            theirs = layer(target)
            if target == PACKAGE and mine != "cli":  # the root is the public API: above all but cli
                violations.append(f"{_where(module, line)} imports the package root {PACKAGE} (only cli may: "
                                  f"the root imports language, graph and compiler)")
                continue
            if theirs is None or theirs == mine:
                continue
            if theirs in RANK and (RANK[theirs] > RANK[mine] or (mine, theirs) in SIBLINGS_APART):
                why = ("layer {a} may not import its sibling {b}" if RANK[theirs] == RANK[mine]
                       else "layer {a} may not import higher layer {b}").format(a=mine, b=theirs)
                violations.append(f"{_where(module, line)} imports {target} ({why})")
    assert not violations, "imports against the layer order:\n" + "\n".join(violations)


def test_no_module_outside_cli_imports_cli():
    # the cli is the top layer, so the test above already refuses this; said on its own because
    # it is the rule most easily broken (reusing a console or a count type from cli.common)
    offenders = [f"{_where(m, line)} imports {t}" for m in SOURCES if layer(m) not in (None, "cli")
                 for line, t in imports(m) if layer(t) == "cli"]
    assert not offenders, "only augflow_dsl/cli/ may import augflow_dsl.cli:\n" + "\n".join(offenders)


def module_graph() -> nx.DiGraph:
    """Modules and their imports (function-local ones included), without the package root, which
    every submodule's import reads anyway."""
    g = nx.DiGraph()
    for module in SOURCES:
        if module in TOP:
            continue
        g.add_node(module)
        for line, target in imports(module):
            if target not in TOP:
                g.add_edge(module, target, line=line)
    return g


def test_no_import_cycles():
    g = module_graph()
    cycles = []
    for cycle in nx.simple_cycles(g):
        arrows = [f"{_where(a, g.edges[a, b]['line'])} imports {b}" for a, b in zip(cycle, cycle[1:] + cycle[:1])]
        cycles.append(" -> ".join(cycle + cycle[:1]) + "\n    " + "\n    ".join(arrows))
        if len(cycles) >= 50:
            break
    assert not cycles, f"import cycles ({len(cycles)}{'+' if len(cycles) >= 50 else ''}):\n" + "\n".join(cycles)


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_no_module_over_500_lines():
    over = {str(p.relative_to(ROOT)): _lines(p) for p in SOURCES.values() if _lines(p) > MAX_LINES}
    new = {p: n for p, n in over.items() if p not in STILL_OVER_500}
    assert not new, f"modules over {MAX_LINES} lines: " + ", ".join(f"{p} ({n})" for p, n in sorted(new.items()))


def test_over_500_allowlist_is_not_stale():
    stale = [p for p in STILL_OVER_500 if not (ROOT / p).is_file() or _lines(ROOT / p) <= MAX_LINES]
    assert not stale, f"STILL_OVER_500 lists modules now within {MAX_LINES} lines (or gone); drop them: {stale}"


def test_the_reader_sees_relative_and_function_local_imports():
    """The reader itself (a reader that saw nothing would pass every test above)."""
    assert "augflow_dsl.cli.common" in {t for _, t in imports("augflow_dsl.cli.check")}  # from .common
    assert "augflow_dsl.runtime.launch" in {t for _, t in imports("augflow_dsl.cli.train")}  # inside run()
    # runtime/ is augflow_dsl.runtime: its relative imports resolve inside it and above it
    assert {"augflow_dsl.compiler.model_file", "augflow_dsl.runtime.data"} <= {
        t for _, t in imports("augflow_dsl.runtime.run_io")}
