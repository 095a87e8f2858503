"""``augflow-dsl diff``: exact figures, the changed arguments, added units and ops, exit codes.

The README example and one error run as the installed command (``run_cli``); the other CLI cases
call ``augflow_dsl.cli.main`` in this process (a subprocess costs seconds of imports each)."""
from __future__ import annotations

import json

import pytest

from augflow_dsl.cli import main
from augflow_dsl.tools.diff import DiffTrouble, diff_specs

from conftest import BASE, ROOT, assert_torch_free, mutate, run_cli

VFLOW = "specs/vflow6ch.flow"
DH64 = "specs/vflow6ch-dh64.flow"
DIGITS = "specs/digits-small.flow"


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``augflow-dsl ARGV`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def vflow_vs_dh64():
    return diff_specs(ROOT / VFLOW, ROOT / DH64)


def test_readme_example_figures(vflow_vs_dh64):
    r = vflow_vs_dh64
    assert not r.same
    t = r.totals
    assert (t.parameters.a, t.parameters.b) == (39_700_096, 22_650_912)
    assert t.parameters.delta == 22_650_912 - 39_700_096
    # the dequantizer r follows D_H; q keeps its 96 filters
    assert t.q.delta == 0 and t.dequantizer.delta == 1_933_536 - 3_466_976 and t.dequantizer.b == 1_933_536
    assert t.flow.delta + t.q.delta + t.dequantizer.delta == t.parameters.delta
    assert (t.data_dims.delta, t.augmented_dims.delta, t.prior_dims.delta) == (0, 0, 0)
    # the one changed argument, old -> new, in every coupling net of p and r and nowhere else
    assert [(c.name, c.a, c.b) for c in r.changes] == [("filters", 96, 64)]
    changed = [u for u in r.units if u.status == "changed"]
    assert len(changed) == 10 and changed[0].unit == "dequantizer: q dequant"
    assert all(u.a.shape_out == u.b.shape_out for u in changed)
    assert sum(u.b.params - u.a.params for u in r.units) == t.parameters.delta
    assert next(u for u in r.units if u.unit == "q: q posterior").status == "same"
    op = changed[1].ops[0]
    assert op.status == "changed" and op.where.startswith("net: ")
    assert [(a.name, a.a, a.b) for a in op.args] == [("filters", 96, 64)]


def test_readme_example_cli_json():
    p = run_cli("diff", VFLOW, DH64, "--json")
    assert p.returncode == 1, p.stderr
    r = json.loads(p.stdout)
    assert r["same"] is False
    assert r["totals"]["parameters"] == {"a": 39_700_096, "b": 22_650_912, "delta": 22_650_912 - 39_700_096}
    assert {u["status"] for u in r["units"]} == {"same", "changed"}
    assert r["changes"][0]["name"] == "filters" and (r["changes"][0]["a"], r["changes"][0]["b"]) == (96, 64)


def test_readme_example_table(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, err = cli(capsys, "diff", VFLOW, DH64)
    assert code == 1, err
    assert "filters: 96 -> 64" in out
    assert "39,700,096" in out and "22,650,912" in out and "-17,049,184" in out
    assert "different: 10 changed, 0 added, 0 removed, 34 same" in out


def test_spec_against_itself_exits_0(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, err = cli(capsys, "diff", DIGITS, DIGITS, "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["same"] is True and r["changes"] == []
    assert all(u["status"] == "same" and u["ops"] == [] for u in r["units"])
    code, out, _ = cli(capsys, "diff", DIGITS)
    assert code == 0 and "same graph" in out


def test_two_overrides_of_one_spec_and_set_applies_to_both():
    same = diff_specs(ROOT / DIGITS, overrides=["width=16"])
    assert same.same and same.a.overrides == ["width=16"] == same.b.overrides
    r = diff_specs(ROOT / DIGITS, overrides=["width=16"], overrides_b=["width=24"])
    assert not r.same and r.b.overrides == ["width=16", "width=24"]   # --set-b wins over --set
    assert [(c.name, c.a, c.b) for c in r.changes] == [("filters", 16, 24)]


def test_unit_added_when_units_grows():
    r = diff_specs(ROOT / DIGITS, overrides_b=["units=4"])
    status = {u.unit: u.status for u in r.units}
    assert status["block 1, unit 4"] == "added"
    added = next(u for u in r.units if u.unit == "block 1, unit 4")
    assert added.a is None and added.b.params > 0 and all(o.status == "added" for o in added.ops)
    # unit 3 now has a cross-unit coupling after it: an added augment point, and 2 more channels out
    u3 = next(u for u in r.units if u.unit == "block 1, unit 3")
    assert u3.status == "changed" and any(o.status == "added" and o.role == "augment" for o in u3.ops)
    assert u3.b.shape_out[0] == u3.a.shape_out[0] + 2
    assert r.totals.augmented_dims.delta == 2 * 4 * 4  # growth 2 at 4x4
    assert r.totals.parameters.delta == sum((u.b.params if u.b else 0) - (u.a.params if u.a else 0)
                                            for u in r.units)



def test_unit_removed_cli(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, _ = cli(capsys, "diff", DIGITS, "--set-b", "units=2", "--json")
    assert code == 1
    assert {u["unit"]: u["status"] for u in json.loads(out)["units"]}["block 1, unit 3"] == "removed"


def test_ops_added_within_a_unit(tmp_path):
    a, b = tmp_path / "a.flow", tmp_path / "b.flow"
    a.write_text(BASE)
    b.write_text(mutate("modules: 2 * glow", "modules: 3 * glow"))
    r = diff_specs(a, b)
    u1 = next(u for u in r.units if u.unit == "block 1, unit 1")
    assert u1.status == "changed" and u1.a.ops + 4 == u1.b.ops
    added = [o for o in u1.ops if o.status == "added"]
    assert [o.op for o in added if o.role != "conditioner"] == ["actnorm", "conv1x1", "affine_coupling", "swap"]


def test_trouble_exits_2_without_traceback():
    p = run_cli("diff", DIGITS, "--set-b", "nosuch=3")
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "no variable 'nosuch'" in p.stderr and "Traceback" not in p.stderr + p.stdout


@pytest.mark.parametrize("argv, words", [
    (["diff", "specs/no-such.flow"], "no such spec file"),
    (["diff", DIGITS, "--set-a", "oops"], "must look like NAME=VALUE"),
    (["diff", DIGITS, "--set-b", "units=0"], "digits-small.flow"),
])
def test_trouble_exits_2(capsys, monkeypatch, argv, words):
    monkeypatch.chdir(ROOT)
    code, out, err = cli(capsys, *argv)
    assert code == 2, (out, err)
    assert words in err


def test_shape_error_is_trouble(tmp_path, capsys):
    bad = tmp_path / "bad.flow"
    bad.write_text(mutate("data: {shape: [4, 8, 8], bits: 5}", "data: {shape: [4, 7, 7], bits: 5}"))
    with pytest.raises(DiffTrouble, match="shape error"):
        diff_specs(bad, ROOT / DIGITS)
    code, _, err = cli(capsys, "diff", str(bad), str(ROOT / DIGITS))
    assert code == 2 and "shape error" in err


def test_no_torch():
    assert_torch_free("from augflow_dsl.tools.diff import diff_specs; "
                      f"r = diff_specs({str(ROOT / DIGITS)!r}, overrides_b=['growth=4']); assert not r.same")
