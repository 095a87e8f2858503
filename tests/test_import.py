"""``augflow-dsl import``: the authors' checkpoints mapped name by name onto our specs.

The fixtures ``tests/fixtures/*.keys.json`` are facts read off the reference models at full size
(every tensor name of the checkpoint their training code writes, with its shape); fake
checkpoints built from them check the whole mapping on the meta device (no values, no reference
code). Conversions whose layout is easy to get wrong (ActNorm's sign and shift, VFlow's per-half
norms and 1x1 matrices) are checked on values against the references' formulas written here.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import augflow_dsl as af
from augflow_dsl.cli import main
from augflow_dsl.compiler.model import compile_spec
from augflow_dsl.interop import denseflow, vflow
from augflow_dsl.interop.mapping import ImportMismatch, check, fill
from augflow_dsl.layers.net_modules import NystromAttention
from augflow_dsl.ops import net_descriptions as nl
from augflow_dsl.language.load import load, loads
from conftest import ROOT

DF_SPEC = str(ROOT / "specs" / "denseflow-74-10.flow")
VF_SPEC = str(ROOT / "specs" / "vflow6ch.flow")
FIXTURES = ROOT / "tests" / "fixtures"
# a small DenseFlow of the same architecture (every kind of tensor, a few of each)
VF_SMALL = ["filters=4", "blocks=1", "q_filters=4", "q_blocks=1", "dq_blocks=1", "components=2", "heads=1"]
DF_SMALL = ["units1=2", "units2=2", "units3=1", "modules1=1", "modules2=1", "modules3=1", "mid=8", "depth=1"]


def _fixture(name: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in json.loads((FIXTURES / name).read_text()).items()}


def _ours(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def df_full():
    """DenseFlow-74-10 on the meta device, its attention in the reference's token layout."""
    spec = load(DF_SPEC)
    with torch.device("meta"):
        model = compile_spec(loads(denseflow.reference_spec_text(spec.text), spec.file))
    return model, denseflow.weight_map_for(model)


@pytest.fixture(scope="module")
def vf_full():
    with torch.device("meta"):
        model = compile_spec(VF_SPEC)
    return model, vflow.weight_map_for(model)


# ------------------------------------------------------------------ token layout
def _reference_channel_runs(attn: NystromAttention, x: torch.Tensor) -> torch.Tensor:
    """blocks/attention.py:36-82 as the reference-facts describe it: NCHW reshaped to (N, HW, 3E)
    without a permute, landmark means / sqrt(HW), softmaxes over dim -2, exact pseudo-inverse."""
    n_, _, h, w = x.shape
    n, e, m = h * w, attn.e, attn.m
    qkv = F.conv2d(x, attn.qkv.weight, attn.qkv.bias)
    q, k, v = qkv.reshape(n_, n, 3 * e).chunk(3, dim=-1)
    q_l = q.reshape(n_, m, n // m, e).mean(-2) / math.sqrt(n)
    k_l = k.reshape(n_, m, n // m, e).mean(-2) / math.sqrt(n)
    k1 = torch.softmax(q @ k_l.transpose(-1, -2), dim=-2)
    k2 = torch.softmax(q_l @ k_l.transpose(-1, -2), dim=-2)
    k3 = torch.softmax(q_l @ k.transpose(-1, -2), dim=-2)
    out = (k1 @ torch.linalg.pinv(k2)) @ (k3 @ v) + v
    return F.conv2d(out.reshape(n_, e, h, w), attn.out.weight, attn.out.bias)


def test_channel_runs_is_the_reference_reshape_without_permute():
    torch.manual_seed(0)
    attn = NystromAttention(nl.NystromAttention.of(6, 4, 1, 4, 8, iters=40, tokens="channel_runs")).double()
    x = torch.randn(2, 6, 4, 2, dtype=torch.float64)
    assert torch.allclose(attn(x), _reference_channel_runs(attn, x), atol=1e-7)
    spatial = NystromAttention(nl.NystromAttention.of(6, 4, 1, 4, 8, iters=40)).double()
    spatial.load_state_dict(attn.state_dict())  # same parameters, a different function
    assert not torch.allclose(spatial(x), attn(x), atol=1e-3)


def _reference_iterative_inv(k: torch.Tensor, n_iter: int = 6) -> torch.Tensor:
    """blocks/attention.py:84-96 as the reference-facts describe it: V = K^T / (max column sum *
    max row sum of |K|), both per matrix, then n_iter = 6 Newton-Schulz steps (not an exact pinv)."""
    eye = torch.eye(k.shape[-1], dtype=k.dtype)
    a = k.abs()
    v0 = a.sum(dim=-2, keepdim=True).amax(dim=-1, keepdim=True)
    vi = a.sum(dim=-1, keepdim=True).amax(dim=-2, keepdim=True)
    v = k.transpose(-1, -2) / (v0 * vi)
    for _ in range(n_iter):
        kv = k @ v
        v = (0.25 * v) @ (13 * eye - kv @ (15 * eye - kv @ (7 * eye - kv)))
    return v


def test_imported_attention_uses_the_reference_six_step_inverse(df_full):
    """The imported DenseFlow's attention: channel_runs tokens AND the reference's 6-step
    iterative inverse of K2 (checked against the authors' code on a small config: same function
    to float64 round-off), not an exact pseudo-inverse; with 6 steps the two differ."""
    model, _ = df_full
    assert {a.iters for a in model.modules() if isinstance(a, NystromAttention)} == {6}
    torch.manual_seed(1)
    attn = NystromAttention(nl.NystromAttention.of(8, 4, 1, 4, 16, tokens="channel_runs")).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.mul_(3.0)  # sharp softmaxes: K2 far from well conditioned, so 6 steps are not converged
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    n_, _, h, w = x.shape
    n, e, m = h * w, attn.e, attn.m
    q, k, v = F.conv2d(x, attn.qkv.weight, attn.qkv.bias).reshape(n_, n, 3 * e).chunk(3, dim=-1)
    q_l = q.reshape(n_, m, n // m, e).mean(-2) / math.sqrt(n)
    k_l = k.reshape(n_, m, n // m, e).mean(-2) / math.sqrt(n)
    k1 = torch.softmax(q @ k_l.transpose(-1, -2), dim=-2)
    k2 = torch.softmax(q_l @ k_l.transpose(-1, -2), dim=-2)
    k3 = torch.softmax(q_l @ k.transpose(-1, -2), dim=-2)
    want = F.conv2d(((k1 @ _reference_iterative_inv(k2)) @ (k3 @ v) + v).reshape(n_, e, h, w),
                    attn.out.weight, attn.out.bias)
    with torch.no_grad():
        assert torch.allclose(attn(x), want, atol=1e-10)
        exact = F.conv2d(((k1 @ torch.linalg.pinv(k2)) @ (k3 @ v) + v).reshape(n_, e, h, w),
                         attn.out.weight, attn.out.bias)
        assert not torch.allclose(want, exact, atol=1e-6)


def test_reference_spec_text_sets_channel_runs_and_keeps_the_parameters(df_full):
    model, _ = df_full
    attns = [m for m in model.modules() if isinstance(m, NystromAttention)]
    assert len(attns) == 74 and {a.tokens for a in attns} == {"channel_runs"}
    assert sum(p.numel() for p in model.parameters()) == 130_647_294
    text = denseflow.reference_spec_text("a: dense_attention(project: 8, tokens: spatial)\n"
                                         "b: dense_attention(project: 8)")
    assert text.count("tokens: channel_runs") == 2 and "spatial" not in text


# ------------------------------------------------------------------ full-size mappings from the fixtures
def test_denseflow_fixture_maps_every_key_both_ways(df_full):
    model, wmap = df_full
    keys = _fixture("denseflow-74-10.keys.json")
    assert len(keys) == 3725
    check(wmap, keys, _ours(model), "DenseFlow")  # raises on any unmatched or mis-shaped key
    assert set(wmap.reference_shapes()) == set(keys)
    fake = {k: torch.empty(s, device="meta") for k, s in keys.items()}
    state = fill(wmap, fake.__getitem__, model)
    assert set(state) == set(model.state_dict()) and all(tuple(state[k].shape) == s for k, s in _ours(model).items())


def test_vflow_fixture_maps_every_key_both_ways(vf_full):
    model, wmap = vf_full
    keys = _fixture("vflow6ch.keys.json")
    params = {k: s for k, s in keys.items() if not vflow.is_optimizer_state(k) and not k.endswith(vflow.EMA)}
    assert sum(math.prod(s) for s in params.values()) == 39_700_096
    check(wmap, keys, _ours(model), "VFlow")
    check(wmap, vflow.ema_shapes(keys), _ours(model), "VFlow EMA")
    assert set(wmap.reference_shapes()) == set(params) == set(vflow.ema_shapes(keys))
    fake = {k: torch.empty(s, device="meta") for k, s in keys.items()}
    assert set(fill(wmap, fake.__getitem__, model)) == set(model.state_dict())


# ------------------------------------------------------------------ refusals name the first mismatched keys
def _refusal(wmap, keys, model, what="DenseFlow") -> str:
    with pytest.raises(ImportMismatch) as e:
        check(wmap, keys, _ours(model), what)
    return str(e.value)


def test_refuses_a_mis_shaped_key(df_full):
    model, wmap = df_full
    keys = _fixture("denseflow-74-10.keys.json")
    keys["base_dist.loc"] = (1, 300, 1, 1)
    msg = _refusal(wmap, keys, model)
    assert "mis-shaped: base_dist.loc is [1, 300, 1, 1], the spec needs [1, 308, 1, 1]" in msg


def test_refuses_a_missing_and_an_extra_key(df_full):
    model, wmap = df_full
    keys = _fixture("denseflow-74-10.keys.json")
    gone = "transforms.3.noise_params.0.transformation.0.weight"
    del keys[gone]
    keys["transforms.9.blocks.0.weight"] = (3, 3)
    msg = _refusal(wmap, keys, model)
    assert f"missing from the checkpoint: {gone} [48, 12, 3, 3]" in msg
    assert "in the checkpoint but not in the spec: transforms.9.blocks.0.weight [3, 3]" in msg


def test_refuses_another_architecture(df_full, vf_full):
    """VFlow's names against DenseFlow's spec and the other way round: nothing fits."""
    model, wmap = df_full
    msg = _refusal(wmap, _fixture("vflow6ch.keys.json"), model)
    assert "missing from the checkpoint: transforms.0.encoder.context_init.1.0.nn.0.weight [3, 3, 1, 1]" in msg
    assert "in the checkpoint but not in the spec: context_proc/proj/W [3, 3, 6, 32]" in msg and "(6302 in all)" in msg
    vmodel, vplan = vf_full
    msg = _refusal(vplan, _fixture("denseflow-74-10.keys.json"), vmodel, "VFlow")
    assert "in the checkpoint but not in the spec: base_dist.loc [1, 308, 1, 1]" in msg


def test_refuses_a_spec_of_other_sizes(df_full):
    """DenseFlow-45-6's spec is the same design with other sizes: the keys' shapes name the misfit."""
    spec = load(ROOT / "specs" / "denseflow-45-6.flow")
    with torch.device("meta"):
        model = compile_spec(loads(denseflow.reference_spec_text(spec.text), spec.file))
    msg = _refusal(denseflow.weight_map_for(model), _fixture("denseflow-74-10.keys.json"), model)
    assert "mis-shaped: " in msg and "in the checkpoint but not in the spec: " in msg


# ------------------------------------------------------------------ values against the references' formulas
def test_vflow_norm_and_pointwise_halves_are_put_back_in_place():
    """flows.py Norm: y = x max(g, 1e-10) + b per half [H, W', C']; Pointwise: y = x W per half."""
    torch.manual_seed(0)
    model = compile_spec(VF_SPEC, VF_SMALL)
    wmap = vflow.weight_map_for(model)
    fake = {k: torch.rand(s) + 0.5 for k, s in wmap.reference_shapes().items()}
    model.load_state_dict(fill(wmap, fake.__getitem__, model))
    from augflow_dsl.interop.walk import parts
    steps = parts(model).steps  # the chain between the augment point and the prior
    for i, split in ((0, "columns"), (8, "channels")):  # p's first column step, first channel step
        norm, conv = steps[i], steps[i + 1]
        n, pw = f"Norm_{8 + i // 4}", f"Pointwise_{8 + i // 4}"
        x = torch.randn(2, 6, 32, 32)
        halves = (x[..., 0::2], x[..., 1::2]) if split == "columns" else (x[:, :3], x[:, 3:])
        with torch.no_grad():
            y, _ = norm(x)
            yh = (y[..., 0::2], y[..., 1::2]) if split == "columns" else (y[:, :3], y[:, 3:])
            for j, (xh, got) in enumerate(zip(halves, yh)):
                g, b = fake[f"{n}/norm{j}/g"], fake[f"{n}/norm{j}/b"]
                want = xh * g.permute(2, 0, 1).clamp(min=1e-10) + b.permute(2, 0, 1)
                assert torch.allclose(got, want, atol=1e-5)
            z, _ = conv(x)
            zh = (z[..., 0::2], z[..., 1::2]) if split == "columns" else (z[:, :3], z[:, 3:])
            for j, (xh, got) in enumerate(zip(halves, zh)):
                want = (xh.permute(0, 2, 3, 1) @ fake[f"{pw}/W{j}"]).permute(0, 3, 1, 2)
                assert torch.allclose(got, want, atol=1e-5)


@pytest.fixture(scope="module")
def df_small_checkpoint(tmp_path_factory):
    """A DenseFlow training checkpoint of the small config, in the authors' layout ('model' state
    dict inside the training dict, DataParallel 'module.' prefixes), random values."""
    spec = load(DF_SPEC, DF_SMALL)
    with torch.device("meta"):
        model = compile_spec(loads(denseflow.reference_spec_text(spec.text), spec.file, DF_SMALL))
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for k, s in denseflow.weight_map_for(model).reference_shapes().items():
        if k.endswith("ldj_per_dim"):
            sd[k] = torch.tensor(-math.log(256.0))
        elif k.endswith("_shift"):
            sd[k] = torch.tensor(-0.5)
        elif k.endswith(("_scale", "temperature")) and "log_scale" not in k:
            sd[k] = torch.ones(s)
        elif k.endswith(("dist.buffer", "num_batches_tracked")):
            sd[k] = torch.zeros(s, dtype=torch.long if "num_batches" in k else torch.float32)
        elif k.endswith("initialized"):
            sd[k] = torch.ones(s)
        else:
            sd[k] = 0.1 * torch.randn(s, generator=gen) + (1.0 if k.endswith("running_var") else 0.0)
    path = tmp_path_factory.mktemp("df") / "checkpoint.pt"
    torch.save({"current_epoch": 7, "model": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {"state": {}},
                "scheduler_iter": None}, path)
    return path, sd


def test_cli_imports_denseflow_and_load_model_reads_it(df_small_checkpoint, tmp_path, capsys):
    path, sd = df_small_checkpoint
    out = tmp_path / "model.pt"
    sets = [a for s in DF_SMALL for a in ("--set", s)]
    assert main(["import", "denseflow", str(path), "--spec", DF_SPEC, "--out", str(out), *sets]) == 0
    assert "wrote" in capsys.readouterr().out
    model, spec, meta = af.load_model(out)
    assert meta["imported"]["kind"] == "denseflow" and meta["weights"] == "model"
    assert {m.tokens for m in model.modules() if isinstance(m, NystromAttention)} == {"channel_runs"}
    # ActNorm: the reference's z = (x - shift) exp(-log_scale) (bijections/actnorm.py)
    from augflow_dsl.interop.walk import parts
    chain = parts(model)
    norm = chain.steps[1]
    pre = "transforms.3.blocks.0.transforms.0.transforms.0."
    x = torch.randn(2, 12, 16, 16)
    with torch.no_grad():
        y, ld = norm(x)
    want = (x - sd[pre + "shift"]) * torch.exp(-sd[pre + "log_scale"])
    assert torch.allclose(y, want, atol=1e-6) and bool(norm.initialized)
    assert torch.allclose(ld, -sd[pre + "log_scale"].sum() * 256 * torch.ones(2), atol=1e-4)
    assert torch.equal(chain.prior.loc, sd["base_dist.loc"].reshape(-1, 1, 1))
    with torch.no_grad():
        assert torch.isfinite(model.log_prob(torch.randint(0, 256, (2, 3, 32, 32)))).all()


def test_cli_refuses_a_checkpoint_that_does_not_fit(df_small_checkpoint, tmp_path, capsys):
    path, _ = df_small_checkpoint  # small weights against the full-size spec
    assert main(["import", "denseflow", str(path), "--spec", DF_SPEC, "--out", str(tmp_path / "m.pt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the DenseFlow checkpoint does not fit the spec:") and "mis-shaped: " in err
    assert not (tmp_path / "m.pt").exists()


def test_cli_refuses_unreadable_files(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    assert main(["import", "denseflow", str(junk), "--spec", DF_SPEC, "--out", str(tmp_path / "m.pt")]) == 1
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err
    torch.save({"weights": [1, 2, 3]}, tmp_path / "other.pt")
    assert main(["import", "denseflow", str(tmp_path / "other.pt"), "--spec", DF_SPEC, "--out", "m.pt"]) == 1
    assert "neither a DenseFlow training checkpoint" in capsys.readouterr().err
    assert main(["import", "denseflow", str(junk), "--spec", str(tmp_path / "nope.flow"), "--out", "m.pt"]) == 2
    assert "no such spec file" in capsys.readouterr().err


def test_cli_refuses_an_unreadable_tensorflow_checkpoint(tmp_path, capsys):
    (tmp_path / "model-0.index").write_bytes(b"junk")
    assert main(["import", "vflow", str(tmp_path / "model-0"), "--spec", VF_SPEC, "--out", "m.pt"]) == 1
    err = capsys.readouterr().err
    assert "not a readable TensorFlow checkpoint" in err and "Traceback" not in err
    assert main(["import", "vflow", str(tmp_path / "nothing"), "--spec", VF_SPEC, "--out", "m.pt"]) == 1
    assert "no TensorFlow checkpoint there" in capsys.readouterr().err


# ------------------------------------------------------------------ the TensorFlow checkpoint reader
def test_tf_bundle_reader_reads_what_tensorflow_wrote():
    """tests/fixtures/tf-bundle was written by tf.compat.v1.train.Saver (TF 2.21)."""
    ckpt = vflow.TFCheckpoint(FIXTURES / "tf-bundle")  # a folder: its 'checkpoint' file names model-7
    assert ckpt.prefix.endswith("model-7")
    assert ckpt.shapes == {"Norm_3/norm0/g": (2, 3, 4), "Pointwise/W0": (2, 2), "beta1_power": (),
                           "step64": (5,), "x/ExponentialMovingAverage": (7,)}
    assert torch.equal(ckpt.read("Norm_3/norm0/g"), torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) / 8)
    assert torch.equal(ckpt.read("Pointwise/W0"), torch.tensor([[1.5, -2.0], [0.25, 4.0]]))
    assert ckpt.read("beta1_power").item() == pytest.approx(0.9)
    assert torch.equal(ckpt.read("step64"), torch.arange(5) - 2)
    assert torch.allclose(ckpt.read("x/ExponentialMovingAverage"), torch.linspace(-1, 1, 7, dtype=torch.float64))


def test_tf_bundle_reader_refuses_a_damaged_file(tmp_path):
    src = FIXTURES / "tf-bundle"
    (tmp_path / "model-7.index").write_bytes((src / "model-7.index").read_bytes()[:-60])
    with pytest.raises(ImportMismatch, match="not a readable TensorFlow checkpoint"):
        vflow.TFCheckpoint(tmp_path / "model-7")
    (tmp_path / "model-7.index").write_bytes((src / "model-7.index").read_bytes())
    (tmp_path / "model-7.data-00000-of-00001").write_bytes((src / "model-7.data-00000-of-00001").read_bytes()[:50])
    with pytest.raises(ImportMismatch, match="truncated"):
        vflow.TFCheckpoint(tmp_path / "model-7").read("x/ExponentialMovingAverage")



def test_cli_imports_vflow_with_its_ema(tmp_path, monkeypatch, capsys):
    """A VFlow checkpoint as train() saves it (parameters, EMA shadows, Adam slots); the file
    reader is replaced by a dict (the reader has its own tests above)."""
    with torch.device("meta"):
        model = compile_spec(VF_SPEC, VF_SMALL)
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for k, s in vflow.weight_map_for(model).reference_shapes().items():
        tensors[k] = torch.rand(s, generator=gen) + 0.5
        tensors[k + vflow.EMA] = torch.rand(s, generator=gen) + 0.5
        tensors[k + "/Adam"] = tensors[k + "/Adam_1"] = torch.zeros(s)
    tensors["beta1_power"] = tensors["beta2_power"] = torch.tensor(0.5)

    class Fake:
        def __init__(self, path):
            self.shapes = {k: tuple(v.shape) for k, v in tensors.items()}

        def read(self, name):
            return tensors[name]

    monkeypatch.setattr(vflow, "TFCheckpoint", Fake)
    out = tmp_path / "vflow.pt"
    sets = [a for s in VF_SMALL for a in ("--set", s)]
    assert main(["import", "vflow", "ckpt/model-0", "--spec", VF_SPEC, "--out", str(out), *sets]) == 0
    assert "parameters and EMA" in capsys.readouterr().out
    ema_model, _, meta = af.load_model(out)
    raw_model, _, _ = af.load_model(out, ema=False)
    assert meta["weights"] == "ema"
    w = "Pointwise_8/W1"  # p's first step, its odd-column matrix: ours is the transpose
    from augflow_dsl.interop.walk import parts
    assert torch.equal(parts(ema_model).steps[1].mats[1].weight, tensors[w + vflow.EMA].t())
    assert torch.equal(parts(raw_model).steps[1].mats[1].weight, tensors[w].t())
    assert all(bool(m.initialized) for m in ema_model.modules() if hasattr(m, "initialized"))
    del tensors["MixLogisticAttnCoupling_8/proj_in/W" + vflow.EMA]
    assert main(["import", "vflow", "ckpt/model-0", "--spec", VF_SPEC, "--out", str(out), *sets]) == 1
    assert "EMA" in capsys.readouterr().err
