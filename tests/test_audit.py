"""The audit can fail: for every property a correct log-likelihood depends on (graph/audit.py,
docs/audit.md), a spec -- or, where the language cannot write the violation, a built graph edited
by hand -- that violates it is refused with the node, the reason and the fix. The two user reports
of issue 12 are reproduced as specs; the shipped specs prove every property."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import augflow_dsl as af
from augflow_dsl.errors import SpecError
from augflow_dsl.graph import schema as G
from augflow_dsl.graph.audit import PROPERTIES, PROPERTY_IDS, audit_graph
from augflow_dsl.graph.builder import build, data_chain
from augflow_dsl.graph.check import check_graph
from augflow_dsl.graph.support_audit import propagate
from augflow_dsl.ops import supports as S
from augflow_dsl.ops.regions import Read, Region, split_parts

from conftest import BASE, SPEC_FILES, SPECS_DIR, run_cli

IMAGE = "data: {shape: [3, 4, 4], bits: 8}\n"
STEP = "module step: [actnorm, affine_coupling(net: glow_net(filters: 4), split: columns)]\n"


def refused(text: str, prop: str | None = None) -> list[dict]:
    """The errors check gives ``text``; asserts it is refused, every error located at a node."""
    report = af.check(af.loads(text, "t.flow"))
    assert not report.valid
    for e in report.errors:
        assert e["node"] and e["line"], e
    if prop is not None:
        assert prop not in {p.id for p in report.proved}
    return report.errors


def findings(g, prop: str) -> list:
    found, _ = audit_graph(g, data_chain(g, "p"))
    return [f for f in found if f.prop == prop]


def graph(name_or_text: str, overrides=None):
    text = (SPECS_DIR / f"{name_or_text}.flow").read_text() if "\n" not in name_or_text else name_or_text
    spec = af.loads(text, "t.flow", overrides)
    g, diag = build(spec)
    assert G.graph_info(g).complete and not diag.errors
    assert findings(g, "data-path") == []
    return spec, g


def node(g, label: str) -> str:
    return next(n for n, d in G.nodes(g) if d.label == label)


# ------------------------------------------------------------------------------ the two user reports
DEQUANT_NO_SIGMOID = ("flow: r\n" + IMAGE + STEP +
                      "q dq:\n  context: gated_context(filters: 4, blocks: 1)\n  flow: [2 * step]\n"
                      "dequantize: variational(q: dq, then: logit(0.05))\nstages: [2 * step]\nprior: normal\n")


def test_report_1_a_dequantizer_whose_q_does_not_end_in_the_unit_interval_is_refused():
    (e,) = refused(DEQUANT_NO_SIGMOID, "dequantizer-noise")
    assert e["node"] == "dequantize: variational" and (e["line"], e["column"]) == (7, 13)
    assert e["property"] == "dequantizer-noise"
    assert e["message"].startswith("q 'dq' hands it noise u in R (its last step is 'q dq, step 4: affine_coupling'), "
                                   "but u must lie in [0, 1)^D")
    assert e["message"].endswith("to fix: end q dq's flow with `sigmoid`")
    fixed = DEQUANT_NO_SIGMOID.replace("flow: [2 * step]", "flow: [2 * step, sigmoid]")
    assert af.check(af.loads(fixed)).valid


@pytest.mark.parametrize("context,fix", [
    ("gated_context(filters: 4, blocks: 1, input: centered)", "should be `gated_context(input: raw)`"),
    ("dense_context(filters: 4, depth: 1, growth: 2)", "should be `gated_context(input: raw)` or `data_context`"),
])
def test_report_2_an_augmentation_q_whose_context_scales_integer_data_is_refused(context, fix):
    text = ("flow: r\n" + IMAGE + STEP + f"q post:\n  context: {context}\n  flow: [unsqueeze, sigmoid]\n"
            "dequantize: uniform(then: logit(0.05))\naugment: input(channels: 4, q: post)\n"
            "stages: [2 * step]\nprior: normal\n")
    (e,) = refused(text, "domains")
    op = context.split("(")[0]
    assert e["node"] == f"q post / context: {op}" and e["line"] == 5
    assert e["message"].startswith(f"its input lies in [-2.944, 2.944) (dequantize, then 1: logit), but {op} reads "
                                   f"only {{0, ..., 255}} (integers of 8 bits)")
    assert fix in e["message"]
    with pytest.raises(SpecError, match="cannot compile an invalid spec"):  # no traceback from the layer any more
        af.compile(af.loads(text))
    assert af.check(af.loads(text.replace(context, "gated_context(filters: 4, blocks: 1, input: raw)"))).valid


def test_the_dequantizers_own_context_may_scale_integer_data():
    """r(u|x) reads x itself: integer data of `bits`, what `input: centered` expects (Flow++, VFlow)."""
    _, g = graph("flowpp")
    assert findings(g, "domains") == []
    _, supports = propagate(g, data_chain(g, "p"))
    (ctx,) = [n for n, d in G.nodes(g) if d.role == "context"]
    assert supports.inputs[ctx] == S.Integers(8)
    assert supports.outputs["p/dequantize"] == S.UNIT  # r ends in a sigmoid: (x + u) / 256 in (0, 1)


# ------------------------------------------------------------------------------ one test per property
def test_data_path_a_net_in_the_stages_is_refused_with_the_fix():
    (e,) = refused("flow: t\ndata: {shape: [4]}\nstages: [actnorm, mlp(hidden: 4)]\nprior: normal\n")
    assert e["node"] == "stage 2: mlp"
    assert e["message"] == ("'mlp' is a coupling net, but a flow layer or a drop (factor-out) is needed here; use it "
                            "as the net of a coupling, e.g. affine_coupling(net: mlp(...))")


def test_conditioner_reads_the_transformed_half_is_refused():
    _, g = graph("realnvp")
    net = next(n for n, d in G.nodes(g) if d.role == "conditioner")
    owner = G.node(g, net).owner
    (u,) = [u for u, _ in G.in_edges(g, net, "condition")]
    part = G.edge(g, u, net).part
    assert part == Read(u, "out", Region((0, 3), "checker_even"))
    assert findings(g, "conditioner-reads") == []
    G.update_edge(g, u, net, part=Read(u, "out", Region((0, 3), "all")))  # reads the whole input, not x * mask
    (f,) = findings(g, "conditioner-reads")
    assert f.node == G.node(g, net).label == "stage 1: affine_coupling / net: resnet"
    assert f.message.startswith(f"reads channels 0..2 at every position of {G.node(g, u).label}, but "
                                f"{G.node(g, owner).label} leaves unchanged only channels 0..2 at the checkerboard "
                                f"squares with i + j even")


def test_conditioner_reads_an_op_that_reads_more_than_it_keeps_is_refused(monkeypatch):
    """The check is a set computation on what each op declares, not a comparison of two strings:
    an op whose net reads all channels while it changes half of them fails on a spec."""
    from augflow_dsl.ops.coupling import AffineCoupling
    monkeypatch.setattr(AffineCoupling, "reads", lambda self, a, shape: Region.whole(shape))
    errors = refused("flow: t\ndata: {shape: [4]}\nstages: [affine_coupling(net: mlp(hidden: 4))]\nprior: normal\n",
                     "conditioner-reads")
    assert errors[0]["node"] == "stage 1: affine_coupling / net: mlp"
    assert errors[0]["message"].startswith("reads channels 0..3 at every position of input x, but stage 1: "
                                           "affine_coupling leaves unchanged only channels 0..1 at every position")
    monkeypatch.setattr(AffineCoupling, "unchanged", lambda self, a, shape: None)
    errors = refused("flow: t\ndata: {shape: [4]}\nstages: [affine_coupling(net: mlp(hidden: 4))]\nprior: normal\n")
    assert "changes every element of its input" in errors[0]["message"]
    assert "must declare the region it leaves unchanged" in errors[0]["message"]


def test_cross_unit_reads_a_tensor_outside_its_block_is_refused():
    spec, g = graph(BASE, {"units": 3})
    gnet = node(g, "block 1, unit 2, cross-unit coupling: cross_unit / g: cross_unit_net")
    assert findings(g, "cross-unit-reads") == []
    reads = sorted((u for u, _ in G.in_edges(g, gnet, "condition")), key=lambda u: G.node(g, u).order)
    assert [G.node(g, u).label for u in reads] == ["stage 1: squeeze", "block 1, unit 1, module 8: swap"]
    # (a) a tensor from before the block
    h = g.copy()
    G.add_edge(h, "p/dequantize", gnet, G.EdgeInfo(kind="condition", shape=(4, 8, 8),
                                                    part=Read("p/dequantize", "out", Region((0, 4)))))
    (f,) = findings(h, "cross-unit-reads")
    assert f.node == "block 1, unit 2, cross-unit coupling: cross_unit / g: cross_unit_net"
    assert f.message.startswith("reads dequantize: uniform, which is not block 1's input or the output of its units "
                                "1..1: g_i reads only z_<i")
    # (b) its own unit's output: not an earlier unit's
    own = node(g, "block 1, unit 2, module 8: swap")
    h = g.copy()
    G.add_edge(h, own, gnet, G.EdgeInfo(kind="condition", shape=(18, 4, 4), part=Read(own, "out", Region((0, 18)))))
    (f,) = findings(h, "cross-unit-reads")
    assert f.message.startswith("reads block 1, unit 2, module 8: swap, which is not block 1's input or the output")
    report = check_graph(spec, h, build(spec)[1])
    assert not report.valid and "cross-unit-reads" not in {p.id for p in report.proved}
    assert report.errors[0]["line"] == 7  # the block's line, where its augment is written


def test_one_density_a_tensor_scored_twice_is_refused():
    _, g = graph("toy-glow3")
    last = data_chain(g, "p")[-2]
    G.add_node(g, "p/prior#2", G.NodeInfo(label="prior: normal (2)", op="normal", role="prior", chain="p",
                                          group="flow", unit="prior", shape_in=(2,), shape_out=(2,), params=0,
                                          macs=0, order=10_000, dims=2))
    G.add_edge(g, last, "p/prior#2", G.EdgeInfo(kind="data", shape=(2,), port="out"))
    (f,) = findings(g, "one-density")
    assert f.node == G.node(g, last).label
    assert f.message.startswith("hands its out output to 2 consumers (prior: normal, prior: normal (2)): its dims "
                                "would be scored more than once")


def test_one_density_dims_lost_on_the_way_are_refused():
    _, g = graph("glow")
    drop = next(n for n, d in G.nodes(g) if d.role == "drop")
    (prior, e), = [(v, e) for v, e in G.out_edges(g, drop) if e.port == "dropped"]
    G.update_edge(g, drop, prior, shape=(e.shape[0] - 1,))
    (f,) = findings(g, "one-density")
    assert f.node == G.node(g, drop).label and "takes 3072 dims but hands on 3071" in f.message


def test_augment_scored_an_augment_point_without_its_q_is_refused():
    with pytest.raises(SpecError, match="'input' needs the argument 'q'"):  # the language demands a q
        af.loads("flow: t\ndata: {shape: [2]}\naugment: input(channels: 2)\nstages: [actnorm]\nprior: normal\n")
    _, g = graph("toy-vflow3-10d")
    aug = node(g, "augment: input")
    (q,) = [u for u, _ in G.in_edges(g, aug, "sample")]
    h = g.copy()
    h.remove_edge(q, aug)
    (f,) = findings(h, "augment-scored")
    assert f.node == "augment: input" and f.message.startswith("receives 0 q samples; its 8 augmented dims must be "
                                                               "drawn, and scored, by exactly one q")
    h = g.copy()
    base = next(n for n, d in G.nodes(h) if d.density == G.Q_BASE)
    G.update_node(h, base, dims=7)
    (f,) = findings(h, "augment-scored")
    assert "whose base scores 7" in f.message


def test_augment_scored_a_g_that_does_not_cover_its_dims_is_refused():
    _, g = graph(BASE)
    gnet = next(n for n, d in G.nodes(g) if d.role == "conditioner" and d.op == "cross_unit_net")
    G.update_node(g, gnet, shape_out=(2, 4, 4))  # a mean for the 2 added channels, no log-scale
    (f,) = findings(g, "augment-scored")
    assert f.node == "block 1, unit 1, cross-unit coupling: cross_unit"
    assert f.message.startswith("adds 32 dims but its g emits 32 numbers; a mean and a log-scale per added dim")


def test_q_reads_data_a_q_reading_the_model_is_refused():
    text = ("flow: t\ndata: {shape: [4], bits: 3}\nq post:\n  context: data_context\n"
            "  flow: [affine_coupling(net: mlp(hidden: 4))]\ndequantize: uniform(then: logit(0.05))\n"
            "augment: input(channels: 2, q: post)\nstages: [actnorm]\nprior: normal\n")
    _, g = graph(text)
    assert findings(g, "q-reads-data") == []
    net = node(g, "q post, step 1: affine_coupling / net: mlp")
    G.add_edge(g, "p/dequantize", net, G.EdgeInfo(kind="condition", shape=(4,),
                                                   part=Read("p/dequantize", "out", Region((0, 4)))))
    (f,) = findings(g, "q-reads-data")
    assert f.node == "q post, step 1: affine_coupling / net: mlp"
    assert f.message.startswith("reads dequantize: uniform; q 'post' may read only the data it is conditioned on "
                                "(dequantize, then 1: logit), through its context net")


def test_read_before_drop_a_dropped_part_read_again_is_refused():
    _, g = graph("glow")
    drop = next(n for n, d in G.nodes(g) if d.role == "drop")
    net = next(n for n, d in G.nodes(g) if d.role == "conditioner" and G.node(g, d.owner).order
               > G.node(g, drop).order)
    G.add_edge(g, drop, net, G.EdgeInfo(kind="condition", shape=(6, 16, 16), port="dropped",
                                        part=Read(drop, "dropped", Region((0, 6)))))
    (f,) = findings(g, "read-before-drop")
    assert f.node == G.node(g, drop).label == "stage 98: factor_out"
    assert f.message.startswith(f"its dropped part is read by {G.node(g, net).label}; once dropped, dims go to their "
                                f"prior and nothing else reads them")


@pytest.mark.parametrize("text,node_label,message", [
    ("flow: t\ndata: {shape: [4]}\nstages: [actnorm, logit]\nprior: normal\n", "stage 2: logit",
     "its input lies in R (stage 1: actnorm), but logit reads only (-0.05556, 1.056); to fix: logit reads values in "
     "(0, 1)"),
    ("flow: t\ndata: {shape: [4], bits: 3}\ndequantize: uniform(then: logit(alpha: 0))\nstages: [actnorm]\n"
     "prior: normal\n", "dequantize, then 1: logit",
     "its input lies in [0, 1) (dequantize: uniform), but logit reads only (0, 1)"),
    ("flow: t\ndata: {shape: [4], bits: 3}\ndequantize: uniform(then: [shift(-0.5), logit])\nstages: [actnorm]\n"
     "prior: normal\n", "dequantize, then 2: logit",
     "its input lies in [-0.5, 0.5) (dequantize, then 1: shift), but logit reads only (-0.05556, 1.056)"),
])
def test_domains_an_input_outside_an_ops_domain_is_refused(text, node_label, message):
    (e,) = refused(text, "domains")
    assert e["node"] == node_label and e["message"].startswith(message)
    assert "to fix: " in e["message"]


def test_domains_data_of_bits_must_meet_the_ops_that_expect_it():
    text = ("flow: t\ndata: {shape: [3, 4, 4]}\n" + STEP + "q post:\n  context: dense_context(filters: 4, depth: 1, "
            "growth: 2)\n  flow: [unsqueeze, sigmoid]\naugment: input(channels: 4, q: post)\nstages: [step]\n"
            "prior: normal\n")
    (e,) = refused(text, "domains")
    assert e["message"].startswith("its input lies in R (the data x), but dense_context reads only integers of a bit "
                                   "depth the data does not give (no 'bits')")


def test_inverse_domains_a_sigmoid_in_the_stages_is_refused():
    (e,) = refused("flow: t\ndata: {shape: [4]}\nstages: [actnorm, sigmoid, actnorm]\nprior: normal\n",
                   "inverse-domains")
    assert e["node"] == "stage 2: sigmoid" and (e["line"], e["column"]) == (3, 19)
    assert e["message"].startswith("when sampling, its inverse reads R (the prior's samples pulled back through the "
                                   "steps after it), but the inverse of sigmoid reads only (0, 1); to fix: remove the "
                                   "sigmoid from the stages")
    # ... unless what follows it, sampling, stays in (0, 1): logit(alpha: 0) maps R onto (0, 1)
    report = af.check(af.loads("flow: t\ndata: {shape: [4]}\nstages: [sigmoid, logit(alpha: 0)]\nprior: normal\n"))
    assert report.valid, report.errors
    (e,) = refused("flow: t\ndata: {shape: [4]}\nstages: [sigmoid, logit(0.05)]\nprior: normal\n")
    assert "its inverse reads (-0.05556, 1.056)" in e["message"]


# ------------------------------------------------------------------------------ fixes named in errors
def test_a_coupling_under_a_column_split_context_is_told_to_use_split_columns():
    text = ("flow: t\n" + IMAGE + STEP.replace("split: columns", "split: channels") +
            "q dq:\n  context: gated_context(filters: 4, blocks: 1)\n  flow: [step, sigmoid]\n"
            "dequantize: variational(q: dq)\nstages: [actnorm]\nprior: normal\n")
    (e,) = refused(text)
    assert e["node"] == "q dq, step 2: affine_coupling"
    assert e["message"] == ("context is 4x2 but the coupling's halves are 4x4; the context has the resolution of a "
                            "'columns' split's halves: use `split: columns`")


def test_a_mixture_coupling_on_a_checkerboard_is_told_its_splits():
    (e,) = refused("flow: t\ndata: {shape: [2, 4, 4]}\nstages: [mixture_coupling(split: checkerboard, components: 2, "
                   "net: glow_net(filters: 4))]\nprior: normal\n")
    assert "use `split: columns`" in e["message"] and "or `split: channels`" in e["message"]


def test_cross_unit_net_refuses_a_context():
    text = ("flow: t\n" + IMAGE + "q dq:\n  context: gated_context(filters: 4, blocks: 1)\n"
            "  flow: [affine_coupling(net: cross_unit_net, split: columns), sigmoid]\n"
            "dequantize: variational(q: dq)\nstages: [actnorm]\nprior: normal\n")
    (e,) = refused(text)
    assert e["message"].startswith("cross_unit_net reads no context")


def test_none_is_the_choice_none():
    report = af.check(af.loads("flow: t\ndata: {shape: [2, 2, 2]}\nstages: [actnorm(split: none), affine_coupling("
                               "net: conv_attention(filters: 4, heads: 1, position: none))]\nprior: normal\n"))
    assert report.valid, report.errors


# ------------------------------------------------------------------------------ the report
@pytest.mark.parametrize("path", SPEC_FILES, ids=[p.stem for p in SPEC_FILES])
def test_every_shipped_spec_proves_every_property(path):
    report = af.check(str(path))
    assert report.valid and [p.id for p in report.proved] == list(PROPERTY_IDS)
    for p in report.proved:
        assert p.statement and p.how and p.covered


def test_an_incomplete_graph_proves_nothing():
    report = af.check(af.loads("flow: x\ndata: {shape: [3, 5, 5]}\nstages: [squeeze]\nprior: normal\n"))
    assert not report.valid and report.proved == []


def test_every_property_says_how_it_is_derived():
    assert len(PROPERTY_IDS) == len(set(PROPERTY_IDS)) == 11
    for p in PROPERTIES:
        assert p.statement and p.derivation and p.short
    doc = (SPECS_DIR.parent / "docs" / "audit.md").read_text()
    for p in PROPERTIES:
        assert f"`{p.id}`" in doc
        section = " ".join(doc.split(f"## `{p.id}`")[1].split("\n## ")[0].split())
        assert ("by construction" in section) == (p.construction is not None), p.id


def test_cli_prints_the_proved_properties_and_json_has_them():
    proc = run_cli("check", str(SPECS_DIR / "toy-vflow3-10d.flow"))
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("proved  ")]
    assert [ln.split()[1].rstrip(":") for ln in lines] == list(PROPERTY_IDS)
    assert "proved  q-reads-data: q-networks read only the data (1 q-network)  [by construction]" in lines
    proc = run_cli("check", "--json", str(SPECS_DIR / "toy-vflow3-10d.flow"))
    (data,) = json.loads(proc.stdout)  # one report per spec
    assert [p["id"] for p in data["proved"]] == list(PROPERTY_IDS)
    assert set(data["proved"][0]) == {"id", "statement", "how", "by_construction", "covered", "short"}


# ------------------------------------------------------------------------------ the lattice and the regions
@pytest.mark.parametrize("a,b,inside", [
    (S.Integers(8), S.Integers(8), True), (S.Integers(8), S.Integers(5), False),
    (S.Integers(None), S.Integers(8), False),
    (S.Integers(8), S.REAL, True), (S.Integers(1), S.Interval(-0.1, 1.1), True), (S.Integers(1), S.UNIT, False),
    (S.UNIT, S.UNIT_HALF_OPEN, True), (S.UNIT_HALF_OPEN, S.UNIT, False), (S.UNIT, S.Integers(8), False),
    (S.REAL, S.UNIT, False), (S.Interval(0.2, 0.3), S.UNIT, True), (S.Interval(-1.0, 0.5), S.UNIT, False),
])
def test_subset(a, b, inside):
    assert S.subset(a, b) is inside


def test_join_and_images():
    assert S.join(S.UNIT, S.Interval(-3.0, 0.5, True)) == S.Interval(-3.0, 1.0, True)
    assert S.join(S.UNIT, S.REAL) == S.REAL
    assert S.dequantized(S.UNIT_HALF_OPEN, 8) == S.Interval(0.0, 1.0, True)
    assert S.dequantized(S.UNIT, 2) == S.UNIT
    assert str(S.Interval(-0.5, 0.5, True)) == "[-0.5, 0.5)" and str(S.REAL) == "R"


@pytest.mark.parametrize("split,shape,identity,transformed", [
    ("channels", (5, 2, 2), Region((0, 3)), Region((3, 5))),
    ("channels", (4,), Region((0, 2)), Region((2, 4))),
    ("columns", (3, 4, 4), Region((0, 3), "even_columns"), Region((0, 3), "odd_columns")),
    ("checkerboard", (3, 4, 4), Region((0, 3), "checker_even"), Region((0, 3), "checker_odd")),
])
def test_split_regions(split, shape, identity, transformed):
    a, b = split_parts(split, shape)
    assert (a, b) == (identity, transformed)
    assert a.within(Region.whole(shape)) and not Region.whole(shape).within(a)
    assert not b.within(a) and not a.within(b)


# ------------------------------------------------------------------------------ edited graphs never crash it
EDITED = [BASE] + [(SPECS_DIR / f"{n}.flow").read_text() for n in ("toy-vflow3-10d", "digits-small")]


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(st.sampled_from(EDITED), st.lists(st.tuples(st.sampled_from(["remove", "add", "unpart"]), st.integers(0, 10**6),
                                                   st.integers(0, 10**6),
                                                   st.sampled_from(["data", "condition", "params", "context",
                                                                    "sample"])), min_size=1, max_size=3))
def test_an_edited_graph_is_audited_without_a_traceback(text, edits):
    spec = af.loads(text)
    g, diag = build(spec)
    nodes = sorted(g.nodes)
    for what, i, j, kind in edits:
        edges = sorted(g.edges)
        if what == "remove":
            g.remove_edge(*edges[i % len(edges)])
        elif what == "unpart":
            G.update_edge(g, *edges[i % len(edges)], part=None)
        elif nodes[i % len(nodes)] != nodes[j % len(nodes)]:
            G.add_edge(g, nodes[i % len(nodes)], nodes[j % len(nodes)], G.EdgeInfo(kind=kind, shape=(3,), port="out"))
    report = check_graph(spec, g, diag)
    assert report.valid == (not report.errors)
    assert {p.id for p in report.proved}.isdisjoint({e.get("property") for e in report.errors})
