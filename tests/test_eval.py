"""runtime.evaluate (bits/dim by ELBO and importance weighting), runtime.sampling, and the ``eval`` /
``sample`` commands.

The analytic cases: one actnorm y = a v + b with a standard normal prior. On real data its density
is exact, N(a x + b) a per dim. On integer data x in 0 .. 2^k - 1 with uniform dequantization
v = (x + u) / 2^k (Flow++ eq. 12), the probability of x is the prior's mass over the bin,
P(x) = prod_d [Phi(a_d (x_d + 1) / 2^k + b_d) - Phi(a_d x_d / 2^k + b_d)], which the importance-
weighted estimate approaches as S grows, and the one-sample ELBO's expectation is
sum_d [-((a_d m_d + b_d)^2 + a_d^2 / (12 * 4^k)) / 2 - ln(2 pi) / 2 + ln a_d] - D k ln 2, m = (x + 1/2) / 2^k.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import augflow_dsl as af
from augflow_dsl.cli import main
from augflow_dsl.compiler.model import FlowModel
from augflow_dsl.compiler.model_file import save_trained
from augflow_dsl.runtime.scoring import EvalResult, evaluate, iw_log_likelihood
from augflow_dsl.runtime.sampling import generate, save_npz, to_uint8

LN2 = math.log(2)


def _affine(bits: int | None, a: list[float], b: list[float]) -> FlowModel:
    data = f"{{shape: [{len(a)}], bits: {bits}}}" if bits else f"{{shape: [{len(a)}]}}"
    spec = af.loads(f"flow: analytic\ndata: {data}\n" + ("dequantize: uniform\n" if bits else "")
                    + "stages: [actnorm]\nprior: normal\n", "analytic.flow")
    model = af.compile(spec).double()
    act = model.steps[1 if bits else 0]  # the plan: [dequantizer,] actnorm, prior
    with torch.no_grad():
        act.log_scale.copy_(torch.tensor(a, dtype=torch.float64).log())
        act.bias.copy_(torch.tensor(b, dtype=torch.float64))
    act._mark_initialized()
    return model.eval()


A, B = [6.0, 3.0, 8.0], [-3.0, -1.5, -4.0]
X = torch.tensor([[0, 3, 7], [2, 5, 1], [4, 4, 4], [7, 0, 3], [1, 6, 2]], dtype=torch.float64)


def _phi(t: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(t / math.sqrt(2)))


def _exact_discrete(x: torch.Tensor, k: int) -> torch.Tensor:
    a, b = torch.tensor(A, dtype=torch.float64), torch.tensor(B, dtype=torch.float64)
    return torch.log(_phi(a * (x + 1) / 2 ** k + b) - _phi(a * x / 2 ** k + b)).sum(1)


def _expected_elbo(x: torch.Tensor, k: int) -> torch.Tensor:
    a, b = torch.tensor(A, dtype=torch.float64), torch.tensor(B, dtype=torch.float64)
    z = a * (x + 0.5) / 2 ** k + b
    per = -(z ** 2 + a ** 2 / (12 * 4 ** k)) / 2 - 0.5 * math.log(2 * math.pi) + a.log()
    return per.sum(1) - x.shape[1] * k * LN2


def test_continuous_affine_flow_bits_per_dim_is_exact():
    model = _affine(None, A, B)
    x = torch.randn(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a, b = torch.tensor(A, dtype=torch.float64), torch.tensor(B, dtype=torch.float64)
    z = a * x + b
    logp = (-z ** 2 / 2 - 0.5 * math.log(2 * math.pi) + a.log()).sum(1)
    bpd = -logp / (3 * LN2)
    for samples in (1, 5):
        r = evaluate(model, x, samples=samples, batch=16)
        assert r.n == 40 and r.dims == 3 and r.samples == samples
        assert r.elbo_bpd == pytest.approx(float(bpd.mean()), abs=1e-12)
        assert r.elbo_se == pytest.approx(float(bpd.std() / math.sqrt(40)), abs=1e-12)
        if samples > 1:  # a deterministic model: every importance weight is p(x) itself
            assert r.iw_bpd == pytest.approx(float(bpd.mean()), abs=1e-12)
        else:
            assert r.iw_bpd is None and r.iw_se is None


def test_discrete_elbo_matches_its_closed_form_expectation():
    model = _affine(3, A, B)
    for i, row in enumerate(X):  # one example repeated: the standard error is the noise of u alone
        r = evaluate(model, row.repeat(8000, 1), samples=1, batch=4000, seed=i)
        want = float(-_expected_elbo(row[None], 3) / (3 * LN2))
        assert abs(r.elbo_bpd - want) < 4.5 * r.elbo_se
        assert r.elbo_se < 0.01


def test_importance_weighted_estimate_converges_to_the_bin_probability():
    model = _affine(3, A, B)
    torch.manual_seed(0)
    ll = iw_log_likelihood(model, X, samples=16384, batch=2048)
    exact = _exact_discrete(X, 3)
    # relative sd of the weights over a bin is < 1.3 here, so the S = 16384 estimate is within ~0.01 nats
    assert torch.allclose(ll, exact, atol=0.05)
    gap = (_exact_discrete(X, 3) - _expected_elbo(X, 3)).mean()
    assert gap > 0.2  # ... while the one-sample bound is off by more than four times that
    r = evaluate(model, X, samples=4096, batch=512, seed=1)
    assert r.iw_bpd == pytest.approx(float(-exact.mean() / (3 * LN2)), abs=0.02)


class _Scripted(torch.nn.Module):
    """log_prob returns the next values of a fixed stream (one per row) and logs every call's
    rows; example i carries its index in x[:, 0]. log_likelihood is FlowModel's own."""

    log_likelihood = FlowModel.log_likelihood

    def __init__(self, dims: int = 4):
        super().__init__()
        self.dims = dims
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.stream = torch.randn(10 ** 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
        self.pos = 0
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _dtype(self):
        return torch.float64

    def log_prob(self, x):
        v = self.stream[self.pos:self.pos + x.shape[0]]
        self.pos += x.shape[0]
        self.calls.append((x[:, 0].long().clone(), v))
        return v


@pytest.mark.parametrize("n,samples,batch", [(5, 7, 16), (3, 100, 16), (4, 16, 16), (9, 2, 5), (2, 33, 8)])
def test_importance_weights_streamed_in_bounded_batches_combine_exactly(n, samples, batch):
    m = _Scripted()
    x = torch.arange(n, dtype=torch.float64)[:, None].expand(n, 4).contiguous()
    got = iw_log_likelihood(m, x, samples, batch)
    assert max(len(ids) for ids, _ in m.calls) <= batch
    ids = torch.cat([i for i, _ in m.calls])
    vals = torch.cat([v for _, v in m.calls])
    want = torch.stack([torch.logsumexp(vals[ids == i], 0) - math.log(samples) for i in range(n)])
    assert all(int((ids == i).sum()) == samples for i in range(n))
    assert torch.allclose(got, want, atol=1e-12, rtol=0)


def test_evaluate_progress_bound_and_mode():
    m = _Scripted()
    m.train()
    x = torch.arange(10, dtype=torch.float64)[:, None].expand(10, 4).contiguous()
    seen = []
    r = evaluate(m, x, samples=20, batch=8, progress=lambda d, t, s: seen.append((d, t, dict(s))))
    assert m.training  # mode restored
    assert max(len(i) for i, _ in m.calls) <= 8
    done = [d for d, _, _ in seen]
    assert done == sorted(done) and done[-1] == seen[-1][1] == 10 * 21
    last = seen[-1][2]
    assert set(last) == {"loss", "bpd", "iw_bpd", "images_per_s"}
    assert last["bpd"] == pytest.approx(r.elbo_bpd) and last["iw_bpd"] == pytest.approx(r.iw_bpd)
    assert r.iw_bpd < r.elbo_bpd  # log-mean-exp of 20 draws beats a single draw on average
    with pytest.raises(ValueError):
        evaluate(m, x, samples=0)
    with pytest.raises(ValueError):
        evaluate(m, x[:0])


class _Items(torch.utils.data.Dataset):
    def __init__(self, x, batched: bool):
        self.x = x
        if batched:
            self.__getitems__ = lambda idx: self.x[idx]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def test_dataset_and_tensor_inputs_agree_and_limit_and_seed():
    model = _affine(3, A, B)
    x = X.repeat(7, 1)
    ref = evaluate(model, x, samples=3, batch=4, seed=5)
    for batched in (False, True):
        r = evaluate(model, _Items(x, batched), samples=3, batch=4, seed=5)
        assert (r.elbo_bpd, r.iw_bpd) == (ref.elbo_bpd, ref.iw_bpd)
    assert evaluate(model, x, samples=3, batch=4, seed=6).elbo_bpd != ref.elbo_bpd
    assert evaluate(model, x, limit=5, batch=2).n == 5
    assert isinstance(ref, EvalResult) and json.dumps(ref.as_dict())


# ---------------------------------------------------------------------------------- sampling, CLI
SMALL_DIGITS = """flow: digits-tiny
data: {shape: [1, 8, 8], bits: 5, dataset: digits}
module step: [actnorm, conv1x1, affine_coupling(net: glow_net(filters: 8))]
dequantize: uniform
stages: [squeeze, 2 * step]
prior: normal
train: {batch: 16, ema: 0.9}
"""

TOY = """flow: toy-tiny
data: {shape: [2], dataset: checkerboard}
module step: [actnorm, affine_coupling(net: mlp(hidden: 8, layers: 1), layout: halves)]
stages: [2 * step]
prior: normal
"""


def _checkpoint(tmp_path, text: str, ema: bool = False):
    spec = af.loads(text, "tiny.flow")
    model = af.compile(spec)
    shape = (32, *spec.data.shape)
    model.initialize(torch.randint(0, 32, shape).float() if spec.data.bits else torch.randn(shape))
    state = model.state_dict()
    ema_state = {f"module.{k}": v.clone() for k, v in state.items()} if ema else None
    run = tmp_path / spec.name
    save_trained(run / "checkpoints" / "last.pt", {
        "spec_text": spec.text, "spec_file": spec.file, "overrides": {}, "model": state, "ema": ema_state,
        "step": 3, "epoch": 0, "train": (spec.train.model_dump() if spec.train else {})})
    return run, model


def test_generate_is_seeded_and_batched_and_npz_holds_levels(tmp_path):
    _, model = _checkpoint(tmp_path, SMALL_DIGITS)
    a = generate(model, 10, batch=4, seed=1)
    assert a.shape == (10, 1, 8, 8) and torch.equal(a, generate(model, 10, batch=4, seed=1))
    assert a.min() >= 0 and a.max() <= 31 and torch.equal(a, a.round())
    save_npz(a, tmp_path / "s.npz", 5)
    z = np.load(tmp_path / "s.npz")
    assert z["samples"].dtype == np.uint8 and int(z["bits"]) == 5 and np.array_equal(z["samples"], a.numpy())
    assert to_uint8(torch.tensor([0.0, 31.0]), 5).tolist() == [0, 255]


def test_eval_and_sample_commands(tmp_path, capsys):
    run, _ = _checkpoint(tmp_path, SMALL_DIGITS, ema=True)
    assert main(["eval", str(run), "--samples", "3", "--limit", "6", "--batch", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 6 and out["samples"] == 3 and out["weights"] == "ema" and out["step"] == 3
    assert math.isfinite(out["elbo_bpd"]) and math.isfinite(out["iw_bpd"])
    png, npz = tmp_path / "grid.png", tmp_path / "s.npz"
    assert main(["sample", str(run), "--n", "6", "--temperature", "0.8", "--out", str(png), "--npz", str(npz),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and np.load(npz)["samples"].shape == (6, 1, 8, 8)
    assert out["n"] == 6 and out["temperature"] == 0.8
    assert main(["eval", str(run), "--limit", "4"]) == 0  # the rich summary table
    assert "bits/dim, one-sample ELBO" in capsys.readouterr().out


def test_vector_data_samples_as_a_scatter_plot_and_refuses_fid(tmp_path, capsys):
    run, _ = _checkpoint(tmp_path, TOY)
    png = tmp_path / "toy.png"
    assert main(["sample", str(run), "--n", "50", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["eval", str(run), "--fid", "10", "--limit", "5"]) == 1
    err = capsys.readouterr().err
    assert "FID is defined on images only" in err and "Traceback" not in err


@pytest.mark.parametrize("argv,code,needle", [
    (["eval", "{missing}"], 1, "no such checkpoint"),
    (["eval", "{garbage}"], 1, "not a readable checkpoint"),
    (["sample", "{garbage}", "--out", "{tmp}/x.png"], 1, "not a readable checkpoint"),
    (["sample", "{run}", "--out", "{tmp}/no/such/dir/x.png"], 1, "no such folder"),
    (["sample", "{run}", "--n", "2", "--out", "{tmp}/x.xyz"], 1, "cannot write"),
    (["eval", "{run}", "--device", "cuda:7"], 2, "no CUDA device"),
    (["eval", "{run}", "--fid", "4", "--inception-weights", "{tmp}/none.pt"], 1, "no such Inception weights"),
])
def test_user_mistakes_are_messages_not_tracebacks(tmp_path, capsys, argv, code, needle):
    if torch.cuda.is_available() and "cuda:7" in argv:
        pytest.skip("a machine with CUDA")
    run, _ = _checkpoint(tmp_path, SMALL_DIGITS)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    fill = {"missing": str(tmp_path / "nope"), "garbage": str(garbage), "tmp": str(tmp_path), "run": str(run)}
    assert main([a.format(**fill) for a in argv]) == code
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["sample", "x"], ["eval", "x", "--samples", "0"],
                                  ["sample", "x", "--out", "y.png", "--temperature", "-1"]])
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
