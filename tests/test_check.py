"""`check`: every shipped spec is valid with its exact parameter count; overrides move the counts by
what closed-form arithmetic (written out here, independently of the op formulas) says; the graph is
a networkx DiGraph with shapes on its edges; the audit finds problems in deliberately broken graphs;
and checking never imports torch."""
from __future__ import annotations

import json
import subprocess
import sys

import networkx as nx
import pytest

import augflow_dsl as af
from augflow_dsl.errors import SpecError
from augflow_dsl.graph import schema as S
from augflow_dsl.graph.builder import build, data_chain
from augflow_dsl.graph.check import audit, check_graph
from augflow_dsl.ops.regions import Read, Region

from conftest import ROOT, SPEC_FILES, SPECS_DIR

# ----------------------------------------------------------------------------- the reference counts
#            spec                  total        flow (p)     q           dequantizer (r)
COUNTS = {
    "denseflow-74-10": (130_647_294, 128_251_510, 0, 2_395_784),
    "denseflow-45-6": (75_020_522, 72_624_738, 0, 2_395_784),
    "flowpp": (31_443_440, 27_976_464, 0, 3_466_976),
    "vflow6ch": (39_700_096, 31_741_248, 4_491_872, 3_466_976),
    "vflow6ch-dh64": (22_650_912, None, 4_491_872, None),
    "vflow6ch-dh56": (19_235_336, None, 4_491_872, None),
    "budget-vflow6ch": (11_020_736, None, None, None),
    "budget-vflow4ch": (9_560_040, None, None, None),
    "budget-flowpp3ch": (8_614_192, None, 0, 3_466_976),
}

DIMS = {  # data + augmented = scored by priors
    "denseflow-74-10": (3_072, 14_720, 17_792),
    "denseflow-45-6": (3_072, 6_912, 9_984),
    "flowpp": (3_072, 0, 3_072),
    "vflow6ch": (3_072, 3_072, 6_144),
    "budget-vflow4ch": (3_072, 1_024, 4_096),
    "toy-vflow3-10d": (2, 8, 10),
}


@pytest.fixture(scope="module")
def reports():
    """One check per shipped spec (each is a few tens of milliseconds)."""
    return {p.stem: af.check(str(p)) for p in SPEC_FILES}


def spec_path(name: str) -> str:
    return str(SPECS_DIR / f"{name}.flow")


def test_the_reference_specs_are_all_there():
    names = {p.stem for p in SPEC_FILES}
    assert set(COUNTS) <= names


@pytest.mark.parametrize("path", SPEC_FILES, ids=[p.stem for p in SPEC_FILES])
def test_every_spec_checks_clean(path, reports):
    report = reports[path.stem]
    assert report.valid, [e["text"] for e in report.errors]
    assert report.errors == []
    assert report.warnings == []
    d = report.dims
    assert d.data + d.augmented == d.prior > 0
    p = report.parameters
    assert p.total == p.flow + p.q + p.dequantizer + p.condition > 0
    assert p.total == sum(n.params for n in report.nodes)


@pytest.mark.parametrize("name", list(COUNTS))
def test_exact_parameter_counts(name, reports):
    p = reports[name].parameters
    total, flow, q, dq = COUNTS[name]
    assert p.total == total
    for got, want in ((p.flow, flow), (p.q, q), (p.dequantizer, dq)):
        if want is not None:
            assert got == want


@pytest.mark.parametrize("name", list(DIMS))
def test_dims_add_up(name, reports):
    d = reports[name].dims
    assert (d.data, d.augmented, d.prior) == DIMS[name]


def test_denseflow_stage_dims(reports):
    """DenseFlow-74-10: 5 cross-unit couplings of 10 channels at 16x16, 3 at 8x8; the two
    squeeze-and-drops hand half the channels to N(0, I)."""
    report = reports["denseflow-74-10"]
    aug = [n for n in report.nodes if n.role == "augment"]
    assert [n.shape_out[0] - n.shape_in[0] for n in aug] == [10] * 8
    assert [n.shape_in[1:] for n in aug] == [[16, 16]] * 5 + [[8, 8]] * 3
    dropped = [n.dropped for n in report.nodes if n.op == "squeeze_and_drop"]
    # 62x16x16 -> squeeze 248x8x8 -> keep 124 (124*64 dropped); 154x8x8 -> 616x4x4 -> keep 308 (308*16 dropped)
    assert dropped == [124 * 64, 308 * 16] == [7_936, 4_928]
    assert report.nodes[-1].shape_in == [308, 4, 4]
    assert 3_072 + 14_720 == 7_936 + 4_928 + 308 * 16


# ----------------------------------------------------------------------------- closed forms
def conv(k: int, c_in: int, c_out: int, bias: bool = True) -> int:
    return k * k * c_in * c_out + (c_out if bias else 0)


def dense_block(c0: int, depth: int, growth: int, out: int) -> int:
    """DenseFlow's dense block: per layer a 1x1 c->c and a 3x3 c->growth conv; a gated 1x1 to 3*out."""
    total = 0
    for i in range(depth):
        c = c0 + i * growth
        total += conv(1, c, c) + conv(3, c, growth)
    return total + conv(1, c0 + depth * growth, 3 * out)


def dense_attention_net(channels: int, project: int, depth: int = 7, growth: int = 64) -> int:
    """The intra-module coupling net of DenseFlow for a coupling on ``channels`` channels:
    ceil(C/2) in, 2*floor(C/2) out (scale and shift)."""
    p, e = project, project // 2
    c_in, c_out = (channels + 1) // 2, 2 * (channels // 2)
    return (conv(1, c_in, p) + dense_block(p, depth, growth, p) + conv(1, p, 3 * e) + conv(1, e, p)
            + 2 * 2 * p + conv(1, 2 * p, p, bias=False) + conv(1, p, c_out))


def denseflow_total(units, modules, growth: int, mid: int, dequantizer: int = 2_395_784) -> int:
    """All of DenseFlow: squeeze to 12x16x16, three blocks of glow-like modules (actnorm 2C, full 1x1
    C^2, coupling net) with cross-unit couplings between units (g: 3x3 c->4c, 1x1 4c->2*growth, reading
    the block input and the earlier units' outputs), squeeze-and-drop keeping 2C, learned prior 2C."""
    c, total = 12, dequantizer
    for b, (n_units, n_modules) in enumerate(zip(units, modules)):
        c0, earlier = c, []
        for u in range(n_units):
            total += n_modules * (2 * c + c * c + dense_attention_net(c, mid))
            if b < 2 and u < n_units - 1:
                reads = c0 + sum(earlier)
                total += conv(3, reads, 4 * reads) + conv(1, 4 * reads, 2 * growth)
                earlier.append(c)
                c += growth
        if b < 2:
            c *= 2
    return total + 2 * c


DF74 = dict(units=(6, 4, 1), modules=(5, 6, 20))
DF45 = dict(units=(5, 3, 1), modules=(3, 5, 15))


def test_denseflow_closed_form_reproduces_the_reference():
    assert dense_attention_net(12, 48) == 1_568_840 + 73 * 12
    assert denseflow_total(**DF74, growth=10, mid=48) == 130_647_294
    assert denseflow_total(**DF45, growth=6, mid=48) == 75_020_522


def test_denseflow_coupling_net_is_1568840_plus_73c(reports):
    """Every coupling net of the model: 1,568,840 + 73*C parameters, C its coupling's channels."""
    g, _ = build(af.load(spec_path("denseflow-74-10")))
    seen = set()
    for n, d in S.nodes(g):
        if d.role == "conditioner" and d.chain == "p" and d.op == "dense_attention":
            c = S.node(g, d.owner).shape_in[0]
            assert d.params == 1_568_840 + 73 * c
            seen.add(c)
    # block 1 at 12..62 channels, block 2 at 124..154, block 3 at 308
    assert seen == {12, 22, 32, 42, 52, 62, 124, 134, 144, 154, 308}


@pytest.mark.parametrize("name,shape", [("denseflow-74-10", DF74), ("denseflow-45-6", DF45)])
@pytest.mark.parametrize("overrides", [{"mid": 32}, {"mid": 64}, {"growth": 8}, {"growth": 12}, {"growth": 5},
                                       {"mid": 40, "growth": 4}])
def test_denseflow_overrides_follow_the_closed_form(name, shape, overrides):
    base = af.check(spec_path(name))
    report = af.check(spec_path(name), overrides)
    assert report.valid, report.errors
    growth0 = 10 if name == "denseflow-74-10" else 6
    growth, mid = overrides.get("growth", growth0), overrides.get("mid", 48)
    expected = denseflow_total(**shape, growth=growth, mid=mid)
    assert report.parameters.total == expected
    assert report.parameters.total - base.parameters.total == expected - denseflow_total(**shape, growth=growth0,
                                                                                           mid=48)
    assert report.parameters.dequantizer == 2_395_784  # the dequantizer reads neither
    units = shape["units"]
    assert report.dims.augmented == (units[0] - 1) * growth * 256 + (units[1] - 1) * growth * 64


def test_denseflow_mid_override_changes_only_the_74_coupling_nets():
    """mid 48 -> 50 changes the 74 coupling nets (5 per unit at 12..62 channels, 6 per unit at
    124..154, 20 at 308) and nothing else."""
    channels = [12 + 10 * u for u in range(6) for _ in range(5)] + [124 + 10 * u for u in range(4) for _ in range(6)]
    channels += [308] * 20
    assert len(channels) == 74
    delta = sum(dense_attention_net(c, 50) - dense_attention_net(c, 48) for c in channels)
    base = af.check(spec_path("denseflow-74-10")).parameters.total
    assert af.check(spec_path("denseflow-74-10"), {"mid": 50}).parameters.total == base + delta


def conv_attention_net(f: int, blocks: int, c_in: int, c_out: int, h: int, w: int) -> int:
    """Flow++'s net: position embedding F*h*w, 3x3 c_in -> F, ``blocks`` x (27F^2 + 12F), 3x3 F -> c_out."""
    return f * h * w + conv(3, c_in, f) + blocks * (27 * f * f + 12 * f) + conv(3, f, c_out)


def flowpp_flow(f: int, blocks: int, components: int = 32) -> int:
    """Flow++'s p: 4 column steps at 3x32x32, squeeze, 2 channel steps and 3 column steps at 12x16x16;
    each step: per-element actnorm (2 x 3,072), one full 1x1 matrix per half, a mixture coupling."""
    o = 2 + 3 * components
    steps = [  # count, identity-half channels, transformed-half channels, half h, half w, 1x1 params
        (4, 3, 3, 32, 16, 2 * 3 * 3),
        (2, 6, 6, 16, 16, 2 * 6 * 6),
        (3, 12, 12, 16, 8, 2 * 12 * 12),
    ]
    return sum(n * (2 * 3072 + mat + conv_attention_net(f, blocks, c1, o * c2, h, w))
               for n, c1, c2, h, w, mat in steps)


def test_flowpp_closed_form_reproduces_the_reference():
    assert flowpp_flow(96, 10) == 27_976_464
    assert flowpp_flow(32, 13) + 3_466_976 == 8_614_192  # budget-flowpp3ch: D_H 32, B 13


@pytest.mark.parametrize("filters", [32, 64, 128])
def test_flowpp_filters_override(filters):
    report = af.check(spec_path("flowpp"), {"filters": filters})
    assert report.valid
    assert report.parameters.flow == flowpp_flow(filters, 10)
    assert report.parameters.dequantizer == 3_466_976  # r has its own width (dq_filters)
    assert report.parameters.total == flowpp_flow(filters, 10) + 3_466_976


@pytest.mark.parametrize("spec,extra_blocks", [("flowpp", 1), ("flowpp", 3), ("vflow6ch", 1)])
def test_one_more_conv_attention_block_is_27f2_plus_12f_per_coupling(spec, extra_blocks):
    """Both models have 9 couplings in p, D_H 96: each extra block adds 27*96^2 + 12*96 = 249,984."""
    base = af.check(spec_path(spec)).parameters
    more = af.check(spec_path(spec), {"blocks": 10 + extra_blocks}).parameters
    f = 96
    assert more.flow - base.flow == extra_blocks * 9 * (27 * f * f + 12 * f)
    assert (more.q, more.dequantizer) == (base.q, base.dequantizer)


def test_vflow_q_block_with_context_adds_the_context_projection():
    """q's couplings read a 32-channel context: a block there adds 27F^2 + 12F + (2*32*F + F)."""
    base = af.check(spec_path("vflow6ch")).parameters
    more = af.check(spec_path("vflow6ch"), {"q_blocks": 4}).parameters
    f = 96
    assert more.q - base.q == 4 * (27 * f * f + 12 * f + 2 * 32 * f + f)
    assert more.flow == base.flow


def test_vflow_components_override():
    """K mixture components: each coupling emits (2 + 3K) numbers per transformed channel through a
    3x3 conv from F = 96 filters: 3*dK*c2*(9F + 1) per coupling, summed over the couplings' c2."""
    base = af.check(spec_path("vflow6ch")).parameters
    fewer = af.check(spec_path("vflow6ch"), {"components": 16}).parameters
    per_channel = 3 * (16 - 32) * (9 * 96 + 1)
    # p on 6 channels: 2 column steps (c2 6), 2 channel steps (3); at 24x16x16: 2 column (24), 3 channel (12)
    assert fewer.flow - base.flow == per_channel * (2 * 6 + 2 * 3 + 2 * 24 + 3 * 12)
    assert fewer.q - base.q == per_channel * 4 * 3  # q: 4 column steps on the 3 extra channels
    assert fewer.dequantizer - base.dequantizer == per_channel * 4 * 3


def test_overrides_as_strings():
    report = af.check(spec_path("denseflow-45-6"), ["growth=8", "mid=32"])
    assert report.parameters.total == denseflow_total(**DF45, growth=8, mid=32)


def test_overriding_an_undefined_name_is_refused():
    with pytest.raises(SpecError) as info:
        af.load(spec_path("flowpp"), {"filtres": 64})
    msg = info.value.message
    assert "override of 'filtres': the spec defines no variable 'filtres'" in msg
    assert "did you mean 'filters'?" in msg
    assert "its variables are: " in msg and "filters, blocks" in msg
    report = af.check(spec_path("flowpp"), {"nonsense": 1})
    assert not report.valid
    assert "'nonsense'" in report.errors[0]["message"]


def test_overriding_a_spec_without_let_is_refused():
    text = "flow: v\ndata: {shape: [2]}\nstages: [actnorm]\n"
    with pytest.raises(SpecError, match="override of 'width': the spec defines no variable 'width'; it has no 'let'"):
        af.loads(text, overrides={"width": 3})


@pytest.mark.parametrize("bad", ["growth", "growth=", "1x=3"])
def test_malformed_override_strings(bad):
    with pytest.raises(SpecError):
        af.load(spec_path("denseflow-45-6"), [bad])


def test_override_of_an_impossible_value_is_reported():
    report = af.check(spec_path("denseflow-45-6"), {"growth": 0})
    assert not report.valid
    assert "greater than 0" in report.errors[0]["message"]
    report = af.check(spec_path("flowpp"), {"filters": 30})  # not divisible by 4 heads
    assert not report.valid
    assert "filters 30 are not divisible by heads 4" in report.errors[0]["message"]


# ----------------------------------------------------------------------------- the graph
@pytest.fixture(scope="module")
def flowpp_graph():
    spec = af.load(spec_path("flowpp"))
    g, diag = build(spec)
    return spec, g, diag


def test_graph_is_a_digraph_with_shapes_on_edges(flowpp_graph):
    spec, g, diag = flowpp_graph
    assert isinstance(g, nx.DiGraph)
    assert S.graph_info(g).complete and not diag.errors
    assert nx.is_directed_acyclic_graph(g)
    assert g.number_of_edges() > 0
    kinds = set()
    for u, v in g.edges:
        e = S.edge(g, u, v)
        kinds.add(e.kind)
        assert isinstance(e.shape, tuple) and e.shape and all(isinstance(s, int) and s > 0 for s in e.shape)
        if e.kind == "data":
            assert tuple(e.shape) == tuple(S.node(g, u).shape_out) or e.port == "dropped"
            assert tuple(e.shape) == tuple(S.node(g, v).shape_in)
    assert kinds == {"data", "condition", "params", "context", "sample"}
    # the data path: input -> dequantizer -> logit -> 37 flow ops -> prior
    chain = data_chain(g, "p")
    assert chain[0] == "input" and chain[-1] == "p/prior"
    assert [S.node(g, n).shape_out for n in chain[-2:]] == [(12, 16, 16), (12, 16, 16)]
    # a coupling's net reads half of a 3x32x32 tensor split by columns and emits (2 + 3*32) per channel
    net = next(n for n, d in S.nodes(g) if d.role == "conditioner" and d.chain == "p")
    assert S.node(g, net).shape_in == (3, 32, 16) and S.node(g, net).shape_out == (294, 32, 16)


def test_build_graph_api_returns_the_same_graph():
    g, diag = af.build_graph(spec_path("denseflow-45-6"))
    assert isinstance(g, nx.DiGraph) and S.graph_info(g).complete and not diag.errors
    assert sum(d.params for _, d in S.nodes(g)) == 75_020_522


def test_unbroken_graphs_audit_clean():
    for path in SPEC_FILES:
        g, diag = build(af.load(str(path)))
        assert audit(g) == [], path.stem


def _p_conditioners(g):
    return [n for n, d in S.nodes(g) if d.role == "conditioner" and d.chain == "p"]


def test_audit_finds_a_removed_edge(flowpp_graph):
    _, g, _ = flowpp_graph
    h = g.copy()
    chain = data_chain(h, "p")
    h.remove_edge(chain[3], chain[4])  # stage 1: actnorm -/-> stage 2: conv1x1
    problems = audit(h)
    assert "stage 1: actnorm: its output is never consumed" in problems
    assert "stage 2: conv1x1: expects one data input, has 0" in problems
    assert "stage 2: conv1x1: not reached from the input" in problems
    assert any(p.startswith("prior: normal: not reached") for p in problems)


def test_audit_finds_a_conditioner_reading_what_the_inverse_cannot_see(flowpp_graph):
    _, g, _ = flowpp_graph
    net = _p_conditioners(g)[0]
    owner = S.node(g, net).owner
    (u, _), = list(S.in_edges(g, net, "condition"))
    assert S.edge(g, u, net).part == Read(u, "out", Region((0, 3), "even_columns"))
    # (a) the net reads the transformed half (odd columns) of its own coupling's input
    h = g.copy()
    S.update_edge(h, u, net, part=Read(u, "out", Region((0, 3), "odd_columns")))
    assert audit(h) == [f"{S.node(h, net).label}: reads channels 0..2 at the odd columns of stage 2: conv1x1, but "
                        f"{S.node(h, owner).label} leaves unchanged only channels 0..2 at the even columns: its "
                        f"inverse does not have the rest when it runs the net (and the log-det would miss the "
                        f"off-diagonal terms); to fix: the op ('mixture_coupling') must read only its identity part"]
    # (b) the net reads a tensor of another chain (r's second step)
    h = g.copy()
    other = next(n for n, d in S.nodes(h) if d.label == "q dequant, step 2: conv1x1")
    S.add_edge(h, other, net, S.EdgeInfo(kind="condition", shape=(3, 32, 32),
                                         part=Read(other, "out", Region((0, 3), "even_columns"))))
    problems = audit(h)
    assert (f"{S.node(h, net).label}: reads channels 0..2 at the even columns of q dequant, step 2: conv1x1, which is "
            f"not the input of stage 3: mixture_coupling") in "\n".join(problems)
    assert any(p.startswith(f"{S.node(h, net).label}: reads q 'dequant' through a condition edge") for p in problems)
    # (c) the net reads the coupling's own output: a cycle
    h = g.copy()
    S.add_edge(h, owner, net, S.EdgeInfo(kind="condition", shape=(3, 32, 32),
                                         part=Read(owner, "out", Region((0, 3), "even_columns"))))
    (problem,) = audit(h)
    assert problem.startswith("the graph has a cycle")


def test_audit_finds_a_net_on_the_data_path(flowpp_graph):
    _, g, _ = flowpp_graph
    h = g.copy()
    net = _p_conditioners(g)[0]
    S.add_edge(h, net, "p/prior", S.EdgeInfo(kind="data", shape=(294, 32, 16)))
    problems = audit(h)
    assert (f"{S.node(h, net).label}: a conditioner stands on the data path; only bijections, augment points, "
            f"drops and priors may") in problems


def test_audit_finds_a_bijection_that_loses_dims(flowpp_graph):
    spec, g, diag = flowpp_graph
    h = g.copy()
    coupling = S.node(h, _p_conditioners(g)[0]).owner
    S.update_node(h, coupling, shape_out=(3, 32, 31))
    assert audit(h) == ["stage 3: mixture_coupling: a bijection must keep its dims (3072 -> 2976)"]
    report = check_graph(spec, h, diag)
    assert not report.valid
    (err,) = report.errors
    assert err["node"] == "stage 3: mixture_coupling"  # the whole label, though it holds ': '
    assert err["message"] == "a bijection must keep its dims (3072 -> 2976)"
    assert (err["line"], err["column"]) == (16, 5)  # the mixture_coupling line of module step


def test_check_finds_augmented_dims_that_do_not_add_up():
    spec = af.load(spec_path("denseflow-45-6"))
    g, diag = build(spec)
    aug = next(n for n, d in S.nodes(g) if d.role == "augment")
    S.update_node(g, aug, added=S.node(g, aug).added + 1)
    report = check_graph(spec, g, diag)
    assert not report.valid
    assert [e["message"] for e in report.errors] == ["augment points declare 6913 added dims but their shapes "
                                                     "add 6912"]


def test_check_report_serialises():
    report = af.check(spec_path("toy-vflow3-10d"))
    data = json.loads(json.dumps(report.model_dump()))
    assert data["valid"] is True and data["parameters"]["total"] == 10_348
    assert data["dims"] == {"data": 2, "augmented": 8, "prior": 10}


# ----------------------------------------------------------------------------- no torch
NO_TORCH = r"""
import sys
attempts = []

class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            attempts.append(name)
            raise ImportError("torch is blocked in this test")
        return None

sys.meta_path.insert(0, BlockTorch())
sys.modules["torch"] = None          # and any `import torch` fails outright

import augflow_dsl, augflow_dsl.cli
from augflow_dsl.graph.serialize import export
report = augflow_dsl.check(sys.argv[1])
assert report.valid and report.parameters.total == 130_647_294, report.errors
bad = augflow_dsl.check(augflow_dsl.loads("flow: x\ndata: {shape: [3, 5, 5]}\nstages: [squeeze]\n"))
assert not bad.valid
export(augflow_dsl.build_graph(sys.argv[1])[0], "graphml")
rc = augflow_dsl.cli.main(["check", "--summary", sys.argv[1]])
assert rc == 0, rc
del sys.modules["torch"]
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("ATTEMPTS", attempts, "LOADED", loaded)
"""


def test_check_never_imports_torch(tmp_path):
    script = tmp_path / "no_torch.py"
    script.write_text(NO_TORCH)
    proc = subprocess.run([sys.executable, str(script), spec_path("denseflow-74-10")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ATTEMPTS [] LOADED []" in proc.stdout
