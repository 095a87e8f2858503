"""`augflow-dsl check` and `augflow-dsl graph` as a user runs them: in a subprocess, through
``python -m augflow_dsl.cli`` (the console script calls the same ``main``)."""
from __future__ import annotations

import io
import json
import os
import re
import sys
from pathlib import Path

import networkx as nx
import pytest

from conftest import BASE, ROOT, mutate, run_cli

FLOWPP = "specs/flowpp.flow"
TOY = "specs/toy-glow3.flow"


@pytest.fixture()
def bad_spec(tmp_path) -> Path:
    """A spec with an unknown op on line 5 (the list form: brackets must survive the rendering)."""
    path = tmp_path / "bad.flow"
    path.write_text("flow: bad\nlet: {w: 8}\ndata: {shape: [4, 8, 8]}\nmodule m: [actnorm]\n"
                    "stages: [squeeze, m, squee]\n")
    return path


@pytest.fixture()
def shape_error_spec(tmp_path) -> Path:
    path = tmp_path / "odd.flow"
    path.write_text(mutate("[4, 8, 8]", "[4, 6, 6]"))
    return path


def test_check_valid_spec_exits_0():
    proc = run_cli("check", FLOWPP)
    assert proc.returncode == 0, proc.stderr
    assert "31,443,440" in proc.stdout
    assert "flow 27,976,464, q 0, dequantizer 3,466,976" in proc.stdout
    assert "specs/flowpp.flow: valid" in proc.stdout
    assert proc.stderr == ""


def test_check_invalid_spec_exits_1_with_location_line_and_caret(bad_spec):
    proc = run_cli("check", str(bad_spec))
    assert proc.returncode == 1
    err = proc.stderr
    assert f"{bad_spec}:5:22: error: unknown op 'squee' in stages (did you mean 'squeeze'?)" in err
    lines = err.splitlines()
    i = next(k for k, line in enumerate(lines) if "unknown op 'squee'" in line)
    assert lines[i + 1] == "  stages: [squeeze, m, squee]"  # the line, brackets and all
    assert lines[i + 2] == "  " + " " * 21 + "^"
    assert "invalid (1 error(s))" in proc.stdout


def test_check_shape_error_names_the_node(shape_error_spec):
    proc = run_cli("check", str(shape_error_spec))
    assert proc.returncode == 1
    assert (f"{shape_error_spec}:8:5: error: stage 3: squeeze_and_drop: squeeze by 2: height 3 is not divisible "
            "by 2") in proc.stderr
    assert "\n    - squeeze_and_drop\n      ^" in proc.stderr


def test_long_error_lines_are_not_wrapped(tmp_path):
    """Piped output is not a terminal: a 300-column line must still come out whole, caret aligned."""
    path = tmp_path / ("long-name-" * 12 + ".flow")
    path.write_text("flow: x\ndata: {shape: [4, 8, 8]}\nstages: [" + "swap, " * 40 + "squee]\n")
    proc = run_cli("check", str(path))
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    col = len("stages: [" + "swap, " * 40) + 1
    assert lines[0] == f"{path}:3:{col}: error: unknown op 'squee' in stages (did you mean 'squeeze'?)"
    assert lines[1] == "  stages: [" + "swap, " * 40 + "squee]"
    assert lines[2] == "  " + " " * (col - 1) + "^"


def test_check_warning_keeps_exit_0(tmp_path):
    path = tmp_path / "warn.flow"
    path.write_text(mutate("stages:", "module extra: [actnorm]\nstages:"))
    proc = run_cli("check", str(path))
    assert proc.returncode == 0
    assert f"{path}:5:1: warning: module 'extra' is defined but never used" in proc.stderr


def test_check_missing_file_exits_2(tmp_path):
    proc = run_cli("check", str(tmp_path / "nope.flow"))
    assert proc.returncode == 2
    assert "no such spec file" in proc.stderr and "nope.flow" in proc.stderr


def test_check_unknown_option_exits_2():
    proc = run_cli("check", "--frobnicate", TOY)
    assert proc.returncode == 2
    assert "unrecognized arguments: --frobnicate" in proc.stderr


def test_no_command_and_unknown_command_exit_2():
    assert run_cli().returncode == 2
    assert run_cli("chek", TOY).returncode == 2


def test_check_several_specs_exits_with_the_worst(bad_spec):
    assert run_cli("check", TOY, str(bad_spec)).returncode == 1
    assert run_cli("check", TOY, FLOWPP).returncode == 0


def test_check_json_valid():
    proc = run_cli("check", "--json", "specs/vflow6ch.flow")
    assert proc.returncode == 0
    (data,) = json.loads(proc.stdout)  # one spec: a one-element array
    assert {"valid", "parameters", "dims", "nodes", "errors"} <= set(data)
    assert data["valid"] is True and data["errors"] == []
    assert data["parameters"] == {"total": 39_700_096, "flow": 31_741_248, "q": 4_491_872, "dequantizer": 3_466_976,
                                  "condition": 0}
    assert data["dims"] == {"data": 3_072, "augmented": 3_072, "prior": 6_144}
    assert isinstance(data["nodes"], list) and len(data["nodes"]) > 40
    node = data["nodes"][0]
    assert {"id", "label", "op", "role", "shape_in", "shape_out", "params", "macs"} <= set(node)
    assert sum(n["params"] for n in data["nodes"]) == 39_700_096


def test_check_json_invalid(bad_spec, shape_error_spec):
    for path, line, col, phrase in ((bad_spec, 5, 22, "unknown op 'squee'"),
                                    (shape_error_spec, 8, 5, "height 3 is not divisible by 2")):
        proc = run_cli("check", "--json", str(path))
        assert proc.returncode == 1
        (data,) = json.loads(proc.stdout)
        assert data["valid"] is False
        (err,) = data["errors"]
        assert {"file", "line", "column", "message"} <= set(err)
        assert (err["file"], err["line"], err["column"]) == (str(path), line, col)
        assert phrase in err["message"]
        assert set(data["parameters"]) == {"total", "flow", "q", "dequantizer", "condition"}
        assert set(data["dims"]) == {"data", "augmented", "prior"}


def test_check_json_several_specs_is_one_array(bad_spec):
    proc = run_cli("check", "--json", TOY, str(bad_spec), "specs/toy-glow20.flow")
    assert proc.returncode == 1  # the worst of the three
    objs = json.loads(proc.stdout)  # one document, not one per line
    assert isinstance(objs, list) and len(objs) == 3
    assert [o["file"] for o in objs] == [TOY, str(bad_spec), "specs/toy-glow20.flow"]
    assert [o["valid"] for o in objs] == [True, False, True]
    assert [o["parameters"]["total"] for o in objs] == [8_280, 0, 55_200]


def test_check_json_with_a_missing_file_prints_no_json(tmp_path):
    proc = run_cli("check", "--json", TOY, str(tmp_path / "nope.flow"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert "no such spec file" in proc.stderr


def test_complete_is_false_when_the_spec_does_not_parse(tmp_path):
    path = tmp_path / "syntax.flow"
    path.write_text("flow: x\ndata: {shape: [4, 8, 8]\nstages: [squeeze]\n")
    proc = run_cli("check", "--json", str(path))
    assert proc.returncode == 1
    (data,) = json.loads(proc.stdout)
    assert data["valid"] is False and data["complete"] is False and data["nodes"] == []
    (err,) = data["errors"]
    assert err["line"] == 3  # the brace left open on line 2 is found on line 3
    # a spec that loads and checks is complete
    (ok,) = json.loads(run_cli("check", "--json", TOY).stdout)
    assert ok["complete"] is True


def test_check_summary():
    proc = run_cli("check", "--summary", "specs/denseflow-74-10.flow")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "130,647,294" in out
    for unit in ("block 1, unit 1", "block 1, unit 6", "block 2, unit 4", "block 3, unit 1", "prior"):
        assert unit in out
    assert "dims: data 3,072 + augmented 14,720 = 17,792; scored by priors 17,792" in out
    full = run_cli("check", "specs/denseflow-74-10.flow").stdout
    assert len(out.splitlines()) < len(full.splitlines()) / 3  # one row per unit, not per node


def test_check_set_overrides():
    proc = run_cli("check", "--json", "--set", "filters=64", "--set", "blocks=5", FLOWPP)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)[0]["valid"] is True
    proc = run_cli("check", "--set", "filtres=64", FLOWPP)
    assert proc.returncode == 1
    assert "override of 'filtres': the spec defines no variable 'filtres' (did you mean 'filters'?)" in proc.stderr


@pytest.mark.parametrize("command, bad, phrase", [
    ("check", "filters", "'filters' must look like NAME=VALUE, e.g. --set filters=6"),
    ("graph", "filters", "'filters' must look like NAME=VALUE"),
    ("compile", "filters", "'filters' must look like NAME=VALUE"),
    ("bench", "filters", "'filters' must look like NAME=VALUE"),
    ("check", "2x=3", "'2x=3': '2x' is not a name; write NAME=VALUE"),
])
def test_set_without_a_name_and_equals_is_a_usage_error(command, bad, phrase):
    """argparse refuses it before the spec is read (and before torch is imported): exit 2."""
    proc = run_cli(command, "--set", bad, FLOWPP)
    assert proc.returncode == 2
    assert f"augflow-dsl {command}: error: argument --set: {phrase}" in proc.stderr
    assert "usage: augflow-dsl " + command in proc.stderr and "Traceback" not in proc.stderr


def test_version():
    import augflow_dsl
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"augflow-dsl {augflow_dsl.__version__}"


def test_independent_errors_are_all_reported(tmp_path):
    """Two unknown ops in different stages, a bad argument and a bad value in two definitions and a
    misspelt setting: five messages, each at its own file:line:col, in source order."""
    path = tmp_path / "multi.flow"
    path.write_text("flow: multi\ndata: {shape: [4, 8, 8], bits: 5}\n"
                    "module a: [actnorm(parm: channel), conv1x1]\n"
                    "module b: [conv1x1(param: lue), swap]\n"
                    "stages: [squeeze, actnrom, a, b, squee]\n"
                    "train: {lr: 1e-3, epoch: 3}\n")
    proc = run_cli("check", "--json", str(path))
    assert proc.returncode == 1
    (data,) = json.loads(proc.stdout)
    got = [(e["line"], e["column"], e["message"].split(";")[0]) for e in data["errors"]]
    assert got == [(3, 20, "'actnorm' has no argument 'parm'"),
                   (4, 27, "'conv1x1': argument 'param' cannot be 'lue' (did you mean 'lu'?)"),
                   (5, 19, "unknown op 'actnrom' in stages (did you mean 'actnorm'?)"),
                   (5, 34, "unknown op 'squee' in stages (did you mean 'squeeze'?)"),
                   (6, 19, "'train' has no setting 'epoch' (did you mean 'epochs'?)")]
    text = run_cli("check", str(path))
    assert "invalid (5 error(s))" in text.stdout
    assert text.stderr.count(f"{path}:") == 5 and text.stderr.count("^") == 5


def test_console_script_is_installed():
    script = Path(sys.executable).parent / ("augflow-dsl.exe" if os.name == "nt" else "augflow-dsl")
    if not script.exists():
        pytest.skip("console script not installed next to this interpreter")
    import subprocess
    proc = subprocess.run([str(script), "check", TOY], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "valid" in proc.stdout


def test_graph_graphml_parses_with_networkx(tmp_path):
    proc = run_cli("graph", "specs/denseflow-45-6.flow", "--format", "graphml")
    assert proc.returncode == 0, proc.stderr
    g = nx.read_graphml(io.BytesIO(proc.stdout.encode("utf-8")))
    assert isinstance(g, nx.DiGraph) and g.is_directed()
    assert g.number_of_nodes() > 100 and g.number_of_edges() > 100
    assert sum(int(d["params"]) for _, d in g.nodes(data=True)) == 75_020_522
    assert g.nodes["input"]["shape_out"] == "3x32x32"
    assert all("shape" in e and "kind" in e for _, _, e in g.edges(data=True))
    # --out writes the same document to a file
    out = tmp_path / "g.graphml"
    assert run_cli("graph", "specs/denseflow-45-6.flow", "--out", str(out)).returncode == 0
    assert nx.read_graphml(out).number_of_nodes() == g.number_of_nodes()


def test_graph_dot_parses():
    proc = run_cli("graph", "specs/digits-small.flow", "--format", "dot")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.startswith('digraph "digits-small" {') and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    nodes = re.findall(r'^  ("(?:[^"\\]|\\.)*") \[label=', text, re.M)
    edges = re.findall(r'^  ("(?:[^"\\]|\\.)*") -> ("(?:[^"\\]|\\.)*") \[', text, re.M)
    body = [line for line in text.splitlines()[2:-1]]
    assert len(nodes) + len(edges) == len(body)  # every statement is a node or an edge
    names = set(nodes)
    assert all(u in names and v in names for u, v in edges)
    try:
        import pydot  # noqa: F401
    except ImportError:
        return
    (graph,) = pydot.graph_from_dot_data(text)  # pragma: no cover - only where pydot is installed
    assert len(graph.get_nodes()) >= len(nodes)


def test_graph_of_invalid_specs_exits_1(bad_spec, shape_error_spec, tmp_path):
    proc = run_cli("graph", str(bad_spec))
    assert proc.returncode == 1 and "unknown op 'squee'" in proc.stderr and proc.stdout == ""
    proc = run_cli("graph", str(shape_error_spec))
    assert proc.returncode == 1 and "height 3 is not divisible by 2" in proc.stderr and proc.stdout == ""
    assert run_cli("graph", str(tmp_path / "missing.flow")).returncode == 2
    assert run_cli("graph", TOY, "--format", "svg").returncode == 2


def test_base_spec_through_the_cli(tmp_path):
    path = tmp_path / "tiny.flow"
    path.write_text(BASE)
    proc = run_cli("check", "--json", str(path))
    assert proc.returncode == 0
    assert json.loads(proc.stdout)[0]["dims"] == {"data": 256, "augmented": 32, "prior": 288}
