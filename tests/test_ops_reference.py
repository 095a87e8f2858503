"""The op reference (`augflow-dsl ops`, docs/ops.md) is read from the registry and kept current."""
from __future__ import annotations

import json

import pytest

from augflow_dsl.ops import REGISTRY
from augflow_dsl.ops.reference import REGENERATE, ROLES, all_ops, describe, markdown

from conftest import ROOT, assert_torch_free, run_cli


def test_docs_ops_md_is_current():
    committed = (ROOT / "docs" / "ops.md").read_text()
    assert committed == markdown(), f"docs/ops.md is out of date: regenerate it with `{REGENERATE}`"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_op_is_documented(name):
    d = describe(name)
    assert d.role in ROLES
    assert d.summary and d.computes and d.shape_rule and d.equation and d.layer
    assert [a.name for a in d.arguments] == list(REGISTRY[name].Args.model_fields)
    for a in d.arguments:
        assert a.type and a.default and a.description, a


def test_argument_types_constraints_and_defaults():
    args = {a.name: a for a in describe("mixture_coupling").arguments}
    assert (args["net"].type, args["net"].default) == ("op", "required")
    assert args["split"].type == "one of: channels, columns, checkerboard" and args["split"].default == "channels"
    assert (args["components"].type, args["components"].default) == ("int, > 0", "32")
    args = {a.name: a for a in describe("gated_context").arguments}
    assert args["dropout"].type == "number, >= 0.0, < 1.0"
    args = {a.name: a for a in describe("cross_unit").arguments}
    assert args["net"].default == "cross_unit_net()"  # a default factory, called
    assert {a.name: a.type for a in describe("variational").arguments} == {"q": "q-network", "then": "list of ops"}
    assert {a.name: a.type for a in describe("block").arguments}["augment"] == "op or none"
    assert {a.name: a.type for a in describe("dense_attention").arguments}["embed"] == "int or none"


def test_list_is_grouped_by_role_in_spec_order():
    roles = [d.role for d in all_ops()]
    order = list(ROLES)
    assert roles == sorted(roles, key=order.index)  # each role's ops together, in ROLES order
    assert {d.name for d in all_ops()} == set(REGISTRY)


def test_ops_lists_every_op_without_torch():
    proc = assert_torch_free("from augflow_dsl.cli import main; sys.exit(main(['ops']))")
    for name in REGISTRY:
        assert name in proc.stdout
    assert "bijection" in proc.stdout and "composite" in proc.stdout


def test_ops_name_prints_one_reference():
    proc = run_cli("ops", "affine_coupling")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for part in ("affine_coupling (bijection)", "argument", "default", "required", "tanh2", "computes",
                 "shape rule", "implements", "RealNVP (Dinh et al. 2017) eq. 7-8", "torch layer",
                 "augflow_dsl.layers.coupling:AffineCoupling"):
        assert part in out, part


def test_ops_unknown_name_suggests_close_matches():
    proc = run_cli("ops", "coupling_affine")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "unknown op 'coupling_affine'" in proc.stderr
    proc = run_cli("ops", "squeez")
    assert "did you mean 'squeeze'" in proc.stderr and "Traceback" not in proc.stderr


def test_ops_json_and_markdown():
    one = json.loads(run_cli("ops", "--json", "squeeze").stdout)
    assert one == json.loads(json.dumps(describe("squeeze").to_dict()))
    assert {a["name"] for a in one["arguments"]} == {"factor", "order"}
    every = json.loads(run_cli("ops", "--json").stdout)
    assert [d["name"] for d in every] == [d.name for d in all_ops()]
    assert run_cli("ops", "--markdown").stdout == markdown()
    assert run_cli("ops", "--markdown", "squeeze").returncode == 2
