"""Conditional flows (issue 23): the condition in the language, check, graph, compile and API."""
from __future__ import annotations

import math

import pytest
import torch

import augflow_dsl as af
from augflow_dsl.graph import schema as S
from augflow_dsl.layers.base import Bijection

VECTOR = """\
flow: cond-vec
data: {shape: [2]}
condition: {classes: 4, embed: 3}
module step: [actnorm, affine_coupling(net: mlp(hidden: 8), condition: true), reverse,
              rq_spline_coupling(net: mlp(hidden: 8), bins: 4, bound: 4, condition: true), reverse,
              additive_coupling(net: mlp(hidden: 8), condition: true), reverse]
stages: [2 * step]
prior: class_normal
"""

IMAGE = """\
flow: cond-img
data: {shape: [2, 4, 4]}
condition: {vector: 3}
stages: [affine_coupling(net: glow_net(filters: 4), split: checkerboard, condition: true),
         affine_coupling(net: glow_net(filters: 4), split: checkerboard, parity: odd, condition: true),
         mixture_coupling(net: glow_net(filters: 4), components: 2, condition: true), squeeze,
         affine_coupling(net: glow_net(filters: 4), condition: true)]
prior: class_normal
"""


def _model(text: str) -> "af.FlowModel":
    m = af.compile(af.loads(text, "t.flow")).double()
    with torch.no_grad():  # off the zero initialisation: every net's output and the prior's map matter
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    for layer in m.modules():
        if hasattr(layer, "_done"):
            layer._done = True
            layer.initialized.fill_(True)
    return m.eval()


def _y(m, n):
    c = m.condition
    return torch.randint(0, c.classes, (n,)) if c.classes is not None else torch.randn(n, c.vector, dtype=torch.float64)


@pytest.mark.parametrize("text", [VECTOR, IMAGE], ids=["vector-labels", "image-context"])
def test_conditioned_steps_invert_and_their_logdets_match_autograd(text, seed):
    """Each bijection with the condition fixed: round trip and log|det J| against autograd's Jacobian."""
    m = _model(text)
    shape = m.data_shape
    y = _y(m, 1)
    checked = 0
    with m._given(y, 1, torch.empty(0, dtype=torch.float64)):
        x = torch.randn(1, *shape, dtype=torch.float64)
        for layer in m.steps:
            if not isinstance(layer, Bijection):
                break
            out, ld = layer(x, None)
            back = layer.inverse(out, None)
            assert torch.allclose(back, x, atol=1e-9), type(layer).__name__
            n = x.numel()
            jac = torch.autograd.functional.jacobian(lambda v: layer(v.view_as(x), None)[0].reshape(-1), x.reshape(-1))
            assert ld.item() == pytest.approx(torch.linalg.slogdet(jac.reshape(n, n))[1].item(), abs=1e-8)
            if getattr(layer, "reads_condition", False):
                checked += 1
                # the condition changes the map: another y gives another output
                with m._given(_y(m, 1) if m.condition.vector else (y + 1) % m.condition.classes, 1,
                              torch.empty(0, dtype=torch.float64)):
                    assert not torch.allclose(layer(x, None)[0], out)
            x = out
    assert checked >= 3


def test_class_normal_density_integrates_to_one_per_class(seed):
    m = _model(VECTOR)
    g = torch.linspace(-9, 9, 301, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    cell = float((g[1] - g[0]) ** 2)
    masses = []
    for k in range(4):
        with torch.no_grad():
            lp = m.log_prob(pts, torch.full((pts.shape[0],), k))
        masses.append(float(lp.exp().sum()) * cell)
    assert masses == pytest.approx([1.0] * 4, abs=2e-2)
    with torch.no_grad():  # and the classes are different densities
        a = m.log_prob(pts[:50], torch.zeros(50, dtype=torch.long))
        b = m.log_prob(pts[:50], torch.ones(50, dtype=torch.long))
    assert (a - b).abs().max() > 1e-3


def test_y_is_checked_with_clear_errors():
    m = _model(VECTOR)
    x = torch.randn(3, 2, dtype=torch.float64)
    cases = {None: "pass y", torch.tensor([0, 1]): "2 rows", torch.tensor([0, 1, 4]): "0..3",
             torch.tensor([0.5, 1, 2]): "non-integer", torch.zeros(3, 2, dtype=torch.long): "shape"}
    for y, words in cases.items():
        with pytest.raises(ValueError, match=words):
            m.log_prob(x, y)
    with pytest.raises(ValueError, match="unconditional"):
        af.compile(af.loads(VECTOR.replace("condition: {classes: 4, embed: 3}\n", "")
                            .replace(", condition: true", "").replace("class_normal", "normal"), "t.flow")
                   ).log_prob(x.float(), torch.tensor([0, 1, 2]))
    img = _model(IMAGE)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        img.log_prob(torch.randn(2, 2, 4, 4, dtype=torch.float64), torch.randn(2, 4))
    assert img.sample(2, y=torch.randn(3, dtype=torch.float64)).shape == (2, 2, 4, 4)  # one context for all


def test_the_api_threads_y_through_every_entry_point(seed):
    m = _model(VECTOR)
    x = torch.randn(5, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    lp = m.log_prob(x, y)
    assert torch.allclose(m.log_likelihood(x, y, samples=3), lp)  # no augmentation: every sample is exact
    assert torch.allclose(m.bits_per_dim(x, y), -lp / (2 * math.log(2)))
    assert torch.allclose(m.decode(m.encode(x, y), y=y), x, atol=1e-9)
    s = m.sample(4, y=2)
    assert s.shape == (4, 2)
    xs, lq = m.rsample_and_log_prob(6, y=torch.arange(6) % 4)
    assert lq.requires_grad and torch.allclose(lq, m.log_prob(xs, torch.arange(6) % 4), atol=1e-10)


def test_check_counts_the_condition_and_refuses_an_undeclared_one():
    r = af.check(af.loads(VECTOR, "t.flow"))
    assert r.valid, r.errors
    assert r.parameters.condition == 4 * 3
    assert r.parameters.total == r.parameters.flow + r.parameters.condition
    m = af.compile(af.loads(VECTOR, "t.flow"))
    assert sum(p.numel() for p in m.parameters()) == r.parameters.total
    img = af.check(af.loads(IMAGE, "t.flow"))
    assert img.valid and img.parameters.condition == 0
    assert sum(p.numel() for p in af.compile(af.loads(IMAGE, "t.flow")).parameters()) == img.parameters.total
    bad = af.check(af.loads(VECTOR.replace("condition: {classes: 4, embed: 3}\n", ""), "t.flow"))
    assert not bad.valid
    e = bad.errors[0]
    assert "declares none" in e["message"] and (e["line"], e["column"]) == (3, 24)
    prior = af.check(af.loads("flow: p\ndata: {shape: [2]}\nstages: [actnorm]\nprior: class_normal\n", "t.flow"))
    assert not prior.valid and "class_normal" in prior.errors[0]["message"]


def test_the_graph_has_a_condition_node_with_edges_to_its_readers():
    g, _ = af.build_graph(af.loads(VECTOR, "t.flow"))
    readers = [v for v, e in S.out_edges(g, S.LABEL)]
    assert len(readers) == 2 * 3 + 1  # every coupling's net and the prior
    assert S.PRIOR_ID in readers
    assert all(S.node(g, v).is_net for v in readers if v != S.PRIOR_ID)
    assert S.node(g, S.LABEL).params == 12


def test_a_declared_condition_nothing_reads_is_a_warning():
    r = af.check(af.loads("flow: p\ndata: {shape: [2]}\ncondition: {classes: 3}\nstages: [actnorm]\n", "t.flow"))
    assert r.valid and any("nothing reads it" in w["message"] for w in r.warnings)


def test_labels_reach_the_prior_and_the_nets_in_training(seed):
    """A tiny class-conditional flow on 4 labelled clusters: the loss falls and each class's samples
    land at its own cluster."""
    centres = torch.tensor([[3.0, 0.0], [0.0, 3.0], [-3.0, 0.0], [0.0, -3.0]])
    y = torch.randint(0, 4, (2048,))
    x = centres[y] + 0.3 * torch.randn(2048, 2)
    m = af.compile(af.loads(VECTOR, "t.flow"))
    m.initialize(x[:256], y[:256])
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for step in range(150):
        i = torch.randint(0, 2048, (128,))
        loss = -m.log_prob(x[i], y[i]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 1.0
    with torch.no_grad():
        for k in range(4):
            s = m.sample(200, y=k)
            nearest = torch.cdist(s, centres).argmin(1)
            assert (nearest == k).float().mean() > 0.8, k


TOY = """\
flow: cond-gauss
data: {shape: [2], dataset: eight_gaussians, labels: true}
condition: {classes: 8, embed: 4}
module step: [actnorm, affine_coupling(net: mlp(hidden: 16), condition: true), reverse]
stages: [3 * step]
prior: class_normal
train: {batch: 64, lr: 3e-3, steps: 4}
"""


def test_commands_train_eval_and_sample_by_class(tmp_path):
    """train feeds the labels, eval scores with them, sample takes --label / --grid-by-class, and each
    refuses what does not apply (JSON outputs read back)."""
    import json

    from conftest import run_cli
    spec = tmp_path / "cond.flow"
    spec.write_text(TOY)
    run = tmp_path / "run"
    r = run_cli("train", str(spec), "--run", str(run), "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    r = run_cli("eval", str(run), "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    assert math.isfinite(json.loads(r.stdout.strip().splitlines()[-1])["elbo_bpd"])
    r = run_cli("sample", str(run), "--grid-by-class", "--nrow", "3", "--out", str(tmp_path / "g.png"),
                "--npz", str(tmp_path / "g.npz"), "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["n"] == 24 and out["labels"] == list(range(8)) and (tmp_path / "g.png").stat().st_size > 0
    r = run_cli("sample", str(run), "--label", "9", "--out", str(tmp_path / "x.png"), timeout=120)
    assert r.returncode == 1 and "0..7" in r.stderr
    r = run_cli("sample", str(run), "--context", "1,2", "--out", str(tmp_path / "x.png"), timeout=120)
    assert r.returncode == 1 and "not on a context vector" in r.stderr


def test_draw_shows_the_condition(tmp_path):
    from augflow_dsl.tools.draw import draw_spec
    spec = tmp_path / "cond.flow"
    spec.write_text(VECTOR)
    draw_spec(spec, tmp_path / "d.svg")
    svg = (tmp_path / "d.svg").read_text()
    assert "condition y" in svg and "(+ y)" in svg


def test_a_q_network_reads_the_condition(seed):
    """The dequantizer's q-flow couplings read y too; counts, graph edges and the ELBO follow."""
    text = """\
flow: cond-dq
data: {shape: [1, 4, 4], bits: 3}
condition: {classes: 3, embed: 2}
q dq:
  base: normal
  flow: [affine_coupling(net: glow_net(filters: 4), split: checkerboard, condition: true), sigmoid]
dequantize: variational(q: dq)
stages: [affine_coupling(net: glow_net(filters: 4), split: checkerboard, condition: true),
         affine_coupling(net: glow_net(filters: 4), split: checkerboard, parity: odd)]
prior: normal
"""
    spec = af.loads(text, "t.flow")
    r = af.check(spec)
    assert r.valid, r.errors
    g, _ = af.build_graph(spec)
    chains = {S.node(g, v).chain for v, _ in S.out_edges(g, S.LABEL)}
    assert chains == {S.MODEL, S.q_chain("dq")}
    m = _model(text)
    assert sum(p.numel() for p in m.parameters()) == r.parameters.total
    x = torch.randint(0, 8, (4, 1, 4, 4)).double()
    y = torch.tensor([0, 1, 2, 0])
    torch.manual_seed(1)
    a = m.log_prob(x, y)
    torch.manual_seed(1)
    b = m.log_prob(x, torch.tensor([1, 2, 0, 1]))
    assert torch.isfinite(a).all() and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="integer data"):
        m.rsample_and_log_prob(2, y=y[:2])


def test_rsample_refuses_a_pending_data_dependent_init():
    """In training mode an actnorm that has not seen data would initialise on the samples between
    drawing and scoring them: the log-density would not be the samples' (refused, with the remedy)."""
    m = af.compile(af.loads(VECTOR, "t.flow")).train()
    with pytest.raises(ValueError, match="initialize"):
        m.rsample_and_log_prob(4, y=torch.arange(4))
    m.initialize(torch.randn(64, 2), torch.randint(0, 4, (64,)))
    x, lp = m.rsample_and_log_prob(4, y=torch.arange(4))
    assert torch.allclose(lp, m.log_prob(x, torch.arange(4)), atol=1e-4)


def test_a_conditional_run_is_the_same_on_two_gloo_ranks_and_after_a_resume(tmp_path):
    """DDP and resume unchanged for a conditional spec: 2 gloo ranks give 1 rank's loss curve (the labels are
    sharded with their images), and a run stopped at step 3 and resumed to 6 logs the uninterrupted run's
    losses bit for bit."""
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT, run_cli
    spec = tmp_path / "cond.flow"
    spec.write_text(TOY)
    fast = ["--log-every", "1", "--eval-every", "1000", "--eval-images", "16", "--batch", "64"]

    def losses(run):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
        return {r["step"]: r["loss"] for r in rows if "split" not in r}

    one, two, cut = tmp_path / "one", tmp_path / "two", tmp_path / "cut"
    assert run_cli("train", str(spec), "--run", str(one), "--steps", "6", *fast, timeout=300).returncode == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "augflow_dsl", "train", str(spec), "--run-dir", str(two), "--steps", "6", *fast],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    assert all(b[s] == pytest.approx(a[s], rel=1e-5) for s in a), (a, b)
    assert run_cli("train", str(spec), "--run", str(cut), "--steps", "3", *fast, timeout=300).returncode == 0
    r = run_cli("train", "--resume", str(cut), "--steps", "6", timeout=300)
    assert r.returncode == 0, r.stderr
    assert losses(cut) == a
