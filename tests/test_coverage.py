"""The coverage audit (graph/coverage_audit.py) and the checkerboard's parity (issue 22).

Both ways: specs that leave elements of a scale untouched are flagged (a warning, at the scale's
last op, with the elements), the fixed RealNVP is not; and on compiled models with every weight
moved off its initialisation the autograd Jacobian of each scale agrees with the audit: the
output elements that depend on their own input element alone are exactly the ones it reports.
"""
from __future__ import annotations

import pytest
import torch

import augflow_dsl as af
from augflow_dsl.graph import schema as G
from augflow_dsl.graph.builder import data_chain
from augflow_dsl.graph.coverage_audit import describe, element_flags, scales
from augflow_dsl.layers.base import Bijection
from augflow_dsl.ops.regions import Region, split_parts

from conftest import SPECS_DIR, run_cli

REALNVP = (SPECS_DIR / "realnvp.flow").read_text()
OLD_REALNVP = REALNVP.replace("parity: odd", "parity: even")  # the shipped spec before issue 22: one mask

NET = "net g: glow_net(filters: 4)\n"
EVEN = "module even: [affine_coupling(split: checkerboard, parity: even, net: g), actnorm]\n"
ODD = "module odd: [affine_coupling(split: checkerboard, parity: odd, net: g), actnorm]\n"
CHANNEL = "module channel: [affine_coupling(split: channels, net: g), swap]\n"


def spec(stages: str, shape="[2, 4, 4]", head: str = "") -> str:
    return f"flow: t\ndata: {{shape: {shape}}}\n{head}{NET}{EVEN}{ODD}{CHANNEL}stages: [{stages}]\nprior: normal\n"


def flagged(text: str) -> tuple[list[dict], object]:
    """The coverage warnings check gives ``text`` (which stays valid: flagged, not refused)."""
    report = af.check(af.loads(text, "t.flow"))
    assert report.valid, report.errors
    found = [w for w in report.warnings if w.get("property") == "coverage"]
    assert ("coverage" in {p.id for p in report.proved}) == (not found)
    for w in found:
        assert w["kind"] == "warning" and w["node"] and w["line"] and w["column"], w
    return found, report


# ------------------------------------------------------------------------------ refused or flagged
def test_the_old_realnvp_mask_is_flagged_at_each_scale_with_the_untouched_squares():
    found, _ = flagged(OLD_REALNVP)
    assert [w["node"] for w in found] == ["stage 6: actnorm", "stage 22: actnorm"]
    assert found[0]["message"].startswith(
        "the 1,536 elements of 3x32x32 in channels 0..2 at the checkerboard squares with i + j even pass this "
        "scale (stage 1: affine_coupling .. stage 6: actnorm, up to stage 7: squeeze) as functions of themselves "
        "alone")
    assert "the elementwise layers (actnorm)" in found[0]["message"]
    assert "`parity: odd`" in found[0]["message"]
    assert found[1]["message"].startswith("the 768 elements of 6x16x16 in channels 0..5 at the checkerboard squares "
                                          "with i + j even")
    assert "up to prior: normal" in found[1]["message"]
    line = OLD_REALNVP.split("\n")[found[0]["line"] - 1]
    assert line.startswith("module even:") and line[found[0]["column"] - 1:].startswith("actnorm")


def test_the_shipped_realnvp_alternates_and_keeps_its_count():
    found, report = flagged(REALNVP)
    assert found == [] and report.warnings == []
    assert report.parameters.total == 18_498_728
    assert next(p for p in report.proved if p.id == "coverage").covered == "3 scales, 7,680 elements"


def test_the_same_mask_repeated_with_nothing_between_is_flagged():
    (w,) = flagged(spec("even, even"))[0]
    assert w["node"] == "stage 4: actnorm"
    assert w["message"].startswith("the 16 elements of 2x4x4 in channels 0..1 at the checkerboard squares with "
                                   "i + j even pass this scale")


def test_two_identical_channel_couplings_are_flagged():
    text = spec("affine_coupling(net: g), affine_coupling(net: g)", "[4, 4, 4]")
    (w,) = flagged(text)[0]
    assert w["node"] == "stage 2: affine_coupling"
    assert w["message"].startswith("the 32 elements of 4x4x4 in channels 0..1 at every position pass this scale "
                                   "(stage 1: affine_coupling .. stage 2: affine_coupling, up to prior: normal)")


def test_a_stage_of_actnorm_only_is_flagged():
    (w,) = flagged(spec("actnorm, squeeze, channel, channel", "[3, 4, 4]"))[0]
    assert w["node"] == "stage 1: actnorm"
    assert w["message"].startswith("the 48 elements of 3x4x4 in channels 0..2 at every position pass this scale "
                                   "(stage 1: actnorm .. stage 1: actnorm, up to stage 2: squeeze)")


@pytest.mark.parametrize("stages,shape", [
    ("even, odd", "[2, 4, 4]"),
    ("odd, even, squeeze, channel, channel", "[2, 4, 4]"),
    ("channel, channel", "[4, 4, 4]"),                         # swap alternates the channel halves
    ("actnorm, conv1x1, affine_coupling(net: g)", "[4, 4, 4]"),  # Glow: a 1x1 conv mixes every channel
    ("even, swap(split: columns), even", "[2, 4, 4]"),           # a column swap flips the checkerboard's parity
    ("affine_coupling(net: g), reverse, affine_coupling(net: g)", "[4, 4, 4]"),
])
def test_alternating_masks_pass(stages, shape):
    assert flagged(spec(stages, shape))[0] == []


def test_the_dequantizers_preprocessing_is_no_scale():
    text = spec("squeeze, channel, channel", head="dequantize: uniform(then: logit(0.05))\n").replace(
        "data: {shape: [2, 4, 4]}", "data: {shape: [2, 4, 4], bits: 8}")
    assert flagged(text)[0] == []


def test_a_maf_needs_the_reversed_order_between_layers():
    vec = "flow: t\ndata: {shape: [4]}\nstages: [%s]\nprior: normal\n"
    (w,) = flagged(vec % "maf(hidden: 4), maf(hidden: 4)")[0]
    assert w["message"].startswith("the 1 element of 4 in feature 0 passes this scale")
    assert flagged(vec % "maf(hidden: 4), maf(hidden: 4, reverse: true)")[0] == []


def test_parity_needs_a_checkerboard():
    report = af.check(af.loads(spec("affine_coupling(split: channels, parity: odd, net: g)", "[4, 4, 4]"), "t.flow"))
    (e,) = report.errors
    assert not report.valid and e["node"] == "stage 1: affine_coupling" and e["line"]
    assert "`parity: odd` picks a checkerboard's squares" in e["message"]


def test_parity_gives_the_other_squares():
    assert split_parts("checkerboard", (3, 4, 4), "odd") == (Region((0, 3), "checker_odd"),
                                                             Region((0, 3), "checker_even"))
    assert split_parts("checkerboard", (3, 4, 4)) == split_parts("checkerboard", (3, 4, 4), "even")


def test_describe_falls_back_to_examples():
    assert describe([0, 5], (2, 2, 2)) == "2 elements of the 8 of 2x2x2 (e.g. (0, 0, 0), (1, 0, 1))"


def test_cli_prints_the_warning_and_json_names_the_property(tmp_path):
    path = tmp_path / "old.flow"
    path.write_text(spec("even, even"))
    proc = run_cli("check", str(path))
    assert proc.returncode == 0 and "warning: stage 4: actnorm: the 16 elements" in proc.stderr
    assert "proved  coverage" not in proc.stdout


# ------------------------------------------------------------------------------ the Jacobian agrees
def _scale_jacobians(model, shape) -> list[torch.Tensor]:
    """The autograd Jacobian of each scale (a run of shape-keeping bijections) at a random input,
    flattened to [out, in]."""
    x = torch.randn(1, *shape, dtype=torch.float64)
    runs, cur = [], []
    for layer in model.steps:
        y = layer(x, None)[0] if isinstance(layer, Bijection) else None
        if y is not None and y.shape == x.shape:
            cur.append(layer)
        else:
            if cur:
                runs.append((cur, x))
            cur = []
        if y is None:
            break
        x = y
    if cur:
        runs.append((cur, x))
    jacobians = []
    for layers, given in runs:
        def f(v, layers=layers):
            for layer in layers:
                v = layer(v, None)[0]
            return v
        start = torch.randn_like(given)
        n = start.numel()
        jacobians.append(torch.autograd.functional.jacobian(f, start).reshape(n, n))
    return jacobians


def _self_only(jac: torch.Tensor) -> list[int]:
    """The output elements whose row has no nonzero entry but the diagonal."""
    off = jac.abs() * (1 - torch.eye(jac.shape[0], dtype=jac.dtype))
    return [k for k in range(jac.shape[0]) if off[k].max() == 0]


def _audit_untouched(text: str) -> list[list[int]]:
    g, _ = af.build_graph(af.loads(text, "t.flow"))
    return [[k for k, f in enumerate(element_flags(g, s)[0]) if not f] for s, _ in scales(g, data_chain(g, G.MODEL))]


@pytest.mark.parametrize("stages,expect_untouched", [
    ("even, odd, even, squeeze, channel, channel", False),
    ("even, even, even, squeeze, channel, channel", True),  # the old RealNVP mask
])
def test_the_jacobian_of_each_scale_agrees_with_the_audit(stages, expect_untouched):
    torch.manual_seed(0)
    text = spec(stages)
    model = af.compile(af.loads(text, "t.flow")).double().eval()
    with torch.no_grad():
        for p in model.parameters():  # every weight off its (zero) initialisation, as test_conformance does
            p.add_(0.2 * torch.randn_like(p))
    jacobians = _scale_jacobians(model, (2, 4, 4))
    audit = _audit_untouched(text)
    assert len(jacobians) == len(audit) == 2
    found = [_self_only(j) for j in jacobians]
    assert found == audit
    even = [k for k, inside in enumerate(Region((0, 2), "checker_even").contains((2, 4, 4))) if inside]
    assert found[0] == (even if expect_untouched else [])
    assert found[1] == []
    for j in jacobians:  # the diagonal is never zero: each element still depends on itself
        assert bool((j.diagonal() != 0).all())


def test_a_scale_of_actnorm_only_depends_on_itself_alone():
    torch.manual_seed(1)
    text = spec("actnorm, squeeze, channel, channel", "[3, 4, 4]")
    model = af.compile(af.loads(text, "t.flow")).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    first = _scale_jacobians(model, (3, 4, 4))[0]
    assert _self_only(first) == list(range(48)) == _audit_untouched(text)[0]


@pytest.mark.parametrize("parity", ["even", "odd"])
def test_the_layer_keeps_the_squares_the_regions_name(parity):
    """The torch mask (layers/splits.py) and the audit's region (ops/regions.py) are the same squares."""
    torch.manual_seed(2)
    model = af.compile(af.loads(spec(f"affine_coupling(split: checkerboard, parity: {parity}, net: g)", "[2, 3, 5]"),
                                "t.flow")).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = torch.randn(2, 2, 3, 5, dtype=torch.float64)
    y = model.steps[0](x, None)[0]
    keep, change = split_parts("checkerboard", (2, 3, 5), parity)
    same = (y == x).flatten(1).all(0).tolist()
    assert same == keep.contains((2, 3, 5))
    assert not any(s and c for s, c in zip(same, change.contains((2, 3, 5))))
