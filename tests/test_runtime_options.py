"""Compiled-model options: save/load, mixed precision of the nets, torch.compile, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli

import augflow_dsl as af
from augflow_dsl.compiler.bench import bench_model
from augflow_dsl.compiler.model_file import load_model, save_compiled

ROOT = Path(__file__).resolve().parents[1]
SMALL_DF = dict(size=16, growth=2, mid=8, depth=1, units1=2, units2=2, modules1=1, modules2=1, modules3=1)


def _model():
    torch.manual_seed(0)
    m = af.compile(ROOT / "specs/denseflow-74-10.flow", overrides=SMALL_DF)
    x = torch.randint(0, 256, (4, 3, 16, 16)).float()
    m.initialize(x)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval(), x


def test_save_and_load_keep_state_and_init(tmp_path):
    m, x = _model()
    path = tmp_path / "m.pt"
    save_compiled(path, m, SMALL_DF)
    m2 = load_model(path)[0]
    m2.eval()
    torch.manual_seed(3)
    a = m.log_prob(x)
    torch.manual_seed(3)
    b = m2.log_prob(x)
    assert torch.equal(a, b)
    # the data-dependent init is state: a reloaded model in train mode is not re-initialised
    m2.train()
    before = {k: v.clone() for k, v in m2.state_dict().items() if "log_scale" in k}
    m2.log_prob(x * 0 + 7)
    after = {k: v for k, v in m2.state_dict().items() if "log_scale" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"


def test_bf16_nets_keep_flow_math_in_float32():
    m, x = _model()
    torch.manual_seed(5)
    ref = m.log_prob(x)
    m.set_precision(torch.bfloat16)
    torch.manual_seed(5)
    got = m.log_prob(x)
    assert got.dtype == torch.float32
    assert not torch.equal(got, ref), "the nets must actually run in bf16"
    assert torch.allclose(got, ref, rtol=2e-2)
    m.set_precision(None)
    torch.manual_seed(5)
    assert torch.equal(m.log_prob(x), ref)


TINY = """
flow: tiny
data: {shape: [2, 4, 4]}
module step: [actnorm, conv1x1, affine_coupling(net: glow_net(filters: 8)), swap]
stages: [2 * step, squeeze, 2 * step]
"""


def test_torch_compile_matches_eager():
    """torch.compile of a compiled model gives the same log-density and gradients (a model
    without sampling inside, so both see the same computation)."""
    torch.manual_seed(0)
    m = af.compile(af.loads(TINY))
    x = torch.randn(8, 2, 4, 4)
    m.initialize(x)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    a = m.log_prob(x)
    (-a.mean()).backward()
    grads = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    b = torch.compile(m)(x)
    (-b.mean()).backward()
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    for g, p in zip(grads, m.parameters()):
        assert torch.allclose(g, p.grad, rtol=1e-3, atol=1e-4)
    m.zero_grad()
    m.compile_nets()  # regional compilation, what `bench --compile` uses
    c = m.log_prob(x)
    assert torch.allclose(a, c, rtol=1e-4, atol=1e-4)


def _cli(*args):
    return run_cli(*args, timeout=300)


def test_compile_and_bench_commands(tmp_path):
    out = tmp_path / "digits.pt"
    r = _cli("compile", "specs/digits-small.flow", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "88,912" in r.stdout and out.exists()
    m = load_model(out)[0]
    assert sum(p.numel() for p in m.parameters()) == 88_912
    r = _cli("bench", "specs/digits-small.flow", "--batch", "4", "--repeats", "1", "--json", "--flops")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["fwd_bwd_s"] > 0 and res["sample_s"] > 0 and res["params"] == 88_912
    # --flops: the counted forward is check's analytic MACs (1,082,624) x 2 x batch 4
    assert res["forward_gflop"] * 1e9 == pytest.approx(8_660_992, abs=0.5)
    assert res["train_gflops"] == pytest.approx(res["train_gflop"] / res["fwd_bwd_s"])
    assert res["sample_of_gemm"] == pytest.approx(res["sample_gflops"] / res["gemm_gflops"])
    assert _cli("bench", "specs/nope.flow").returncode == 2
    assert _cli("compile", "specs/digits-small.flow", "--set", "nosuch=3").returncode == 1


@pytest.mark.parametrize("spec,overrides", [("specs/denseflow-74-10.flow", SMALL_DF),
                                             ("specs/vflow6ch.flow", dict(filters=8, blocks=1))])
def test_bench_flops_equal_the_analytic_count(spec, overrides):
    """bench --flops counts torch's work; its forward equals check's MACs x 2 FLOPs x batch to the
    unit (dense kernel, Nystrom and Flow++ attention, q-networks, augmentation included), and a
    training step does more than 2.5 times the forward's work."""
    s = af.load(ROOT / spec, overrides=overrides)
    macs = af.check(s).macs
    res = bench_model(af.compile(s), 2, repeats=1, flops=True)
    assert res["forward_gflop"] * 1e9 == 2 * macs * 2
    assert res["train_gflop"] > 2.5 * res["forward_gflop"] and res["sample_gflop"] > 0
    assert res["gemm_gflops"] > 0 and res["forward_gflops"] == pytest.approx(res["forward_gflop"] / res["forward_s"])


def test_compile_and_bench_refuse_bad_input(tmp_path):
    """Clear messages and exit codes, never a traceback: unwritable --out, a batch of 0, an
    invalid spec (file:line:col, as from check)."""
    r = _cli("compile", "specs/toy-glow3.flow", "--out", str(tmp_path / "no" / "dir" / "m.pt"))
    assert r.returncode == 1 and "error: cannot save to" in r.stderr and "Traceback" not in r.stderr
    r = _cli("bench", "specs/toy-glow3.flow", "--batch", "0")
    assert r.returncode == 2 and "--batch: expected a whole number >= 1; got '0'" in r.stderr
    bad = tmp_path / "odd.flow"
    bad.write_text("flow: odd\ndata: {shape: [3, 15, 15]}\nstages: [squeeze]\n")
    r = _cli("bench", str(bad))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{bad}:3:10: error:" in r.stderr and "height 15 is not divisible by 2" in r.stderr


def test_model_refuses_a_batch_of_the_wrong_shape():
    m = af.compile(ROOT / "specs/toy-glow3.flow")
    for shape in ((4, 3), (0, 2), (4, 2, 1), (2,)):
        with pytest.raises(ValueError, match=r"expected a batch \[N, 2\] with N >= 1"):
            m.log_prob(torch.randn(shape))
    with pytest.raises(ValueError, match="n >= 1"):
        m.sample(0)
