"""Issue 24's trust items: the parser cache, checked files loaded once, safe names, escaped output,
size limits that `check` enforces, EMA with BatchNorm, ONNX verification and sample-grid levels."""
from __future__ import annotations

import os
import pickle
import stat
import tempfile
from pathlib import Path

import pytest
from lark import Lark

from augflow_dsl.language import parse


class _Payload:
    """A pickle that makes a folder when it is loaded: proof that a planted cache file ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _plant(path: Path, marker: Path) -> None:
    """Keep the first line (lark's hash of the grammar, which anyone can compute) and put the payload after it."""
    head = path.read_bytes().split(b"\n", 1)[0]
    path.write_bytes(head + b"\n" + pickle.dumps(_Payload(marker)))


@pytest.fixture
def fresh_parser(tmp_path, monkeypatch):
    shared_tmp = tmp_path / "shared-tmp"
    shared_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shared_tmp))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    parse.parser.cache_clear()
    yield shared_tmp
    parse.parser.cache_clear()


def test_parser_cache_planted_in_the_shared_temp_folder_is_not_loaded(fresh_parser, tmp_path):
    # what another local user could plant: lark's default cache name in the shared temp folder
    Lark(parse._grammar_path().read_text(), parser="lalr", postlex=parse._FlowIndenter(),
         propagate_positions=True, maybe_placeholders=False, cache=True)
    planted = list(fresh_parser.glob(".lark_cache_*"))
    assert planted
    marker = tmp_path / "ran"
    for p in planted:
        _plant(p, marker)
    parse.parse_text("flow: x\n")
    assert not marker.exists()


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="owner checks need POSIX")
def test_parser_cache_is_private_and_a_writable_planted_file_is_not_loaded(fresh_parser, tmp_path):
    parse.parse_text("flow: x\n")  # builds and writes the cache
    folder = tmp_path / "cache" / "augflow-dsl"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    (cache,) = folder.iterdir()
    assert stat.S_IMODE(cache.stat().st_mode) & 0o077 == 0
    marker = tmp_path / "ran"
    _plant(cache, marker)
    cache.chmod(0o666)  # writable by others: not trusted
    parse.parser.cache_clear()
    parse.parse_text("flow: x\n")
    assert not marker.exists()
    if os.geteuid() == 0:  # a file owned by someone else is not trusted either
        _plant(cache, marker)
        cache.chmod(0o600)
        os.chown(cache, 65534, 65534)
        parse.parser.cache_clear()
        parse.parse_text("flow: x\n")
        assert not marker.exists()
    # a folder others may write is not used at all
    folder.chmod(0o777)
    assert parse.cache_dir() is None


# --- Security 2: --inception-weights are read once; torch-fidelity gets a private copy of the verified tensors

def test_inception_weights_swapped_after_the_check_are_not_loaded(tmp_path, monkeypatch):
    import sys
    import types

    import torch

    from augflow_dsl.runtime import fid as fid_mod

    user_file = tmp_path / "inception.pt"
    state = {"Conv2d_1a_3x3.conv.weight": torch.randn(2, 3), "fc.weight": torch.randn(4, 2)}
    torch.save(state, user_file)
    marker = tmp_path / "ran"
    seen = {}

    def calculate_metrics(**kw):
        path = kw["feature_extractor_weights_path"]
        user_file.write_bytes(pickle.dumps(_Payload(marker)))  # the swap, between the check and the reload
        seen["mode"] = stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)
        loaded = torch.load(path, weights_only=False)  # what torch-fidelity does with the path it is given
        seen["same"] = all(torch.equal(loaded[k], state[k]) for k in state)
        return {"frechet_inception_distance": 1.5}

    monkeypatch.setitem(sys.modules, "torch_fidelity", types.SimpleNamespace(calculate_metrics=calculate_metrics))
    imgs = torch.randint(0, 4, (3, 1, 4, 4))
    assert fid_mod.fid(imgs, imgs, bits=2, weights=user_file) == 1.5
    assert not marker.exists()
    assert seen == {"mode": 0o700, "same": True}


# --- Security 3: the flow name is a slug (it names runs/<name>/ and sweeps/<name>/)

@pytest.mark.parametrize("name", ['"../../x"', '"/etc/x"', '".hidden"', '"a/b"', '"x\\u001b[31m"', '"' + "a" * 101 + '"'])
def test_flow_name_that_leaves_the_runs_folder_is_refused_at_its_place(name):
    from augflow_dsl.errors import SpecError
    from augflow_dsl.language.load import loads
    from conftest import mutate

    with pytest.raises(SpecError) as info:
        loads(mutate("flow: tiny", f"flow: {name}"), "t.flow")
    e = info.value
    assert (e.file, e.line, e.column) == ("t.flow", 1, 7)
    assert "'flow' must be a name" in e.message and "\x1b" not in str(e)


@pytest.mark.parametrize("name", ['"toy-vflow3-10d"', "denseflow-74-10", '"v1.2_b"'])
def test_flow_name_slugs_stay_valid(name):
    from augflow_dsl.language.load import loads
    from conftest import mutate

    assert loads(mutate("flow: tiny", f"flow: {name}"), "t.flow").name == name.strip('"')


# --- Security 4: control characters from user input are escaped in what is printed

def test_error_messages_escape_control_characters_in_the_source_line():
    from augflow_dsl.errors import Loc, Source, SpecError

    e = SpecError("unknown op 'a\x1b]0;pwned\x07'", Loc(1, 10), Source("stages: [a\x1b[2J\x9b31m, b]\n", "x\x1b.flow"))
    text = str(e)
    assert not any(ch in text for ch in "\x1b\x07\x9b")
    assert "\\x1b[2J\\x9b31m" in text and "x\\x1b.flow:1:10" in text
    src, caret = text.splitlines()[1:]
    assert src[caret.index("^")] == "a"  # the caret stays under the column


def test_cli_escapes_control_characters_in_paths_and_usage_errors(capsys):
    from augflow_dsl.cli import main

    assert main(["check", "no-such\x1b[2J.flow"]) == 2
    with pytest.raises(SystemExit):
        main(["check", "--memory", "--precision", "\x1b[2Jx", "a.flow"])
    out = capsys.readouterr()
    assert "\x1b" not in out.out + out.err and "\\x1b[2J" in out.err


def test_rich_console_escapes_control_characters(capsys):
    from augflow_dsl.cli.common import console

    console().print("[red]run[/red] runs/\x1b[2Jx\u202e done")
    out = capsys.readouterr().out
    assert "\x1b[2J" not in out and "\u202e" not in out and "runs/\\x1b[2Jx\\u202e done" in out


# --- what `check` accepts must run: sizes no machine holds and runaway expansions are refused, located

def _check(text: str):
    import augflow_dsl as af
    return af.check(af.loads(text, "t.flow"))


def test_a_repetition_beyond_the_expansion_bound_is_refused_quickly():
    import time

    from augflow_dsl.errors import SpecError
    from augflow_dsl.language.values import MAX_EXPANSION

    assert MAX_EXPANSION == 10_000
    t = time.perf_counter()
    with pytest.raises(SpecError) as info:
        _check("flow: big\ndata: {shape: [1, 8, 8], bits: 5}\nstages: [squeeze, 100000 * actnorm]\nprior: normal\n")
    assert time.perf_counter() - t < 5
    assert "expands to more than 10,000 ops" in info.value.message and (info.value.line, info.value.column) == (3, 19)


def test_a_spec_with_more_parameters_than_any_machine_holds_is_refused_at_the_node():
    text = (Path(__file__).resolve().parents[1] / "specs" / "digits-small.flow").read_text()
    report = _check(text.replace("dense_context(filters: 16,", "dense_context(filters: 1000000,"))
    assert not report.valid
    (e,) = report.errors
    assert "parameters" in e["message"] and "at most 100,000,000,000" in e["message"]
    assert e["line"] is not None and "dense_context(filters: 1000000" in e["text"]


@pytest.mark.parametrize("shape, phrase", [("[4, 8, 1e18]", "whole number"), ("[4, 8, 8.0]", "whole number"),
                                           ("[4, 8, 1048576]", "at most 2^24")])
def test_data_shapes_are_whole_numbers_in_range(shape, phrase):
    from augflow_dsl.errors import SpecError
    from conftest import mutate

    with pytest.raises(SpecError) as info:
        _check(mutate("shape: [4, 8, 8]", f"shape: {shape}"))
    assert phrase in info.value.message and (info.value.line, info.value.column) == (3, 8)


def test_compile_turns_an_allocation_failure_into_a_message_naming_the_size(monkeypatch, capsys, tmp_path):
    from augflow_dsl.cli import main
    from augflow_dsl.compiler import model as model_mod
    from augflow_dsl.errors import SpecError
    from conftest import BASE

    def fail(spec, g):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 36001203271232 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(model_mod, "FlowModel", fail)
    spec = tmp_path / "t.flow"
    spec.write_text(BASE)
    with pytest.raises(SpecError) as info:
        model_mod.compile_spec(str(spec))
    assert "parameters take" in info.value.message and "check --memory" in info.value.message
    assert main(["compile", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "cannot allocate 'tiny'" in err and "check --memory" in err and "Traceback" not in err


# --- EMA with BatchNorm: the averaged model keeps the live running statistics (runtime/ema.py says why)

BN_SPEC = """flow: bn-tiny
data: {shape: [1, 8, 8], bits: 5, dataset: digits}
module step: [actnorm, conv1x1(param: lu), affine_coupling(net: dense_attention(project: 8, depth: 1, growth: 4)), swap]
dequantize: uniform(then: shift(-0.5))
stages: [squeeze, 2 * step]
prior: learned_normal
"""


def test_ema_of_a_batchnorm_spec_keeps_live_statistics_and_evaluates_no_worse_than_raw():
    import torch

    import augflow_dsl as af
    from augflow_dsl.runtime.data import _digits
    from augflow_dsl.runtime.ema import EMA
    from augflow_dsl.runtime.scoring import evaluate

    torch.manual_seed(0)
    train, test, _, _ = _digits(0)
    model = af.compile(af.loads(BN_SPEC, "bn.flow"))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    ema = EMA(model, 0.6)
    for step in range(24):  # 16 steps with the rate falling to 0, then 8 at 0: the averaged weights catch up
        for group in opt.param_groups:
            group["lr"] = 5e-3 * max(0.0, 1 - step / 16)
        loss = model.bits_per_dim(train[torch.randint(0, len(train), (32,))].float()).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)
    live = dict(model.named_buffers())
    for name, b in ema.module.named_buffers():  # not an average of statistics measured under other weights
        assert torch.equal(b, live[name]), name
    raw = evaluate(model, test[:96].float(), seed=0).elbo_bpd
    averaged = evaluate(ema.module, test[:96].float(), seed=0).elbo_bpd
    assert averaged <= raw + 2e-3, (averaged, raw)


def test_recomputed_batchnorm_statistics_are_the_averaged_weights_own():
    """recompute_batchnorm: each BatchNorm's running mean becomes the mean of its input over the given
    batches under the module's own weights (the same batches and noise, measured by a hook)."""
    import torch

    import augflow_dsl as af
    from augflow_dsl.runtime.data import _digits
    from augflow_dsl.runtime.ema import recompute_batchnorm
    from augflow_dsl.runtime.noise import example_noise

    torch.manual_seed(1)
    train, _, _, _ = _digits(0)
    model = af.compile(af.loads(BN_SPEC, "bn.flow"))
    model.train()
    model.initialize(train[:64].float())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    data = [train[i * 32:(i + 1) * 32].float() for i in range(3)]

    def score(m, x):
        score.k += 1
        with example_noise(0, 0, 0, 1, x.shape[0], purpose=f"bn-{score.k}"):
            return m(x)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    seen = {id(n): [] for n in norms}
    hooks = [n.register_forward_hook(lambda mod, inp, out: seen[id(mod)].append(inp[0].detach()))
             for n in norms]
    score.k = 0
    assert recompute_batchnorm(model, data, score)
    for h in hooks:
        h.remove()
    assert not model.training
    for n in norms:
        acts = torch.cat([a.transpose(0, 1).reshape(a.shape[1], -1) for a in seen[id(n)]], 1)
        per_batch = torch.stack([a.transpose(0, 1).reshape(a.shape[1], -1).mean(1) for a in seen[id(n)]])
        torch.testing.assert_close(n.running_mean, per_batch.mean(0), rtol=1e-4, atol=1e-5)  # cumulative average
        assert acts.shape[1] > 0 and int(n.num_batches_tracked) == 3


def test_a_bn_run_checkpoints_recomputed_ema_statistics_and_resumes_to_the_bit(tmp_path):
    """The checkpoint's EMA holds BatchNorm statistics measured for the EMA weights (not the live
    model's), and a run crashed after a checkpoint resumes to the same metrics rows, evaluations
    (which recompute the statistics) included."""
    import json

    import torch

    from augflow_dsl.language.load import loads
    from augflow_dsl.runtime.step import TrainHooks
    from augflow_dsl.runtime.train import Trainer, TrainOptions

    class Crash(Exception):
        pass

    class Hooks(TrainHooks):
        def __init__(self, at):
            self.at = at

        def after_step(self, step):
            if step == self.at:
                raise Crash(step)

    spec_text = BN_SPEC + "train: {batch: 16, ema: 0.9, ema_bn_batches: 4}\n"

    def trainer(run, crash=None):
        opts = TrainOptions(run=str(run), steps=8, log_every=1, eval_every=3, eval_images=32, checkpoint_every=4,
                            sample_n=0, final_eval=False, tensorboard=False)
        return Trainer(loads(spec_text, "bn.flow"), {}, {}, opts, hooks=Hooks(crash))

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    trainer(whole).run()
    with pytest.raises(Crash):
        trainer(cut, crash=6).run()
    trainer(cut).run()
    a = (whole / "metrics.jsonl").read_text().splitlines()
    b = (cut / "metrics.jsonl").read_text().splitlines()
    strip = lambda rows: [{k: v for k, v in json.loads(r).items() if k not in ("time", "images_per_s")} for r in rows]
    assert strip(a) == strip(b)
    ck = torch.load(whole / "checkpoints" / "last.pt", weights_only=True)
    means = [k for k in ck["ema"] if k.endswith("running_mean")]
    assert means and any(not torch.equal(ck["ema"][k], ck["model"][k.removeprefix("module.")]) for k in means)


def test_curves_say_which_weights_each_curve_uses(tmp_path, monkeypatch):
    import matplotlib.figure

    from augflow_dsl.runtime.metrics import plot_curves

    labels = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: labels.extend(t.get_text() for t in fig.axes[0].get_legend().get_texts()))
    rows = [{"step": 1, "bpd": 4.0}, {"step": 2, "bpd": 3.5},
            {"step": 2, "split": "test", "bpd": 3.6, "samples": 1, "weights": "ema"}]
    with pytest.raises(FileNotFoundError):  # savefig wrote nothing to move into place
        plot_curves(rows, tmp_path / "curves.png")
    assert labels == ["train (one-sample ELBO, raw weights)", "test (one-sample ELBO, EMA weights)"]


def test_curves_with_eval_raw_draw_the_ema_and_the_raw_test_curves(tmp_path, monkeypatch):
    import matplotlib.figure

    from augflow_dsl.runtime.metrics import plot_curves
    from augflow_dsl.runtime.tensorboard import scalars_of

    labels = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: labels.extend(t.get_text() for t in fig.axes[0].get_legend().get_texts()))
    raw = {"step": 2, "split": "test", "bpd": 3.5, "samples": 1, "weights": "raw", "alongside": "ema"}
    ema = {"step": 2, "split": "test", "bpd": 3.6, "samples": 1, "weights": "ema"}
    with pytest.raises(FileNotFoundError):
        plot_curves([{"step": 1, "bpd": 4.0}, raw, ema], tmp_path / "curves.png")
    assert labels == ["train (one-sample ELBO, raw weights)", "test (one-sample ELBO, EMA weights)",
                      "test (one-sample ELBO, raw weights)"]
    assert scalars_of(raw) == {"eval/test_bpd_raw": 3.5} and scalars_of(ema) == {"eval/test_bpd": 3.6}


def test_train_eval_raw_logs_the_raw_weights_beside_the_ema(tmp_path, capsys):
    import json

    from conftest import SPECS_DIR

    from augflow_dsl.cli import main

    run = tmp_path / "run"
    code = main(["train", str(SPECS_DIR / "toy-glow3.flow"), "--run", str(run), "--steps", "4", "--batch", "16",
                 "--eval-every", "2", "--eval-images", "32", "--eval-raw", "--set", "train.ema=0.5",
                 "--set", "train.eval_samples=4", "--no-tensorboard"])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    tests = [(r["step"], r["samples"], r["weights"], "alongside" in r) for r in rows if "split" in r]
    assert tests == [(2, 1, "raw", True), (2, 1, "ema", False), (4, 1, "raw", True), (4, 1, "ema", False),
                     (4, 4, "raw", True), (4, 4, "ema", False)]
    step2 = [r["bpd"] for r in rows if r.get("step") == 2 and "split" in r]
    assert step2[0] != step2[1]  # two sets of weights, two figures


def test_ema_warmup_follows_tensorflows_num_updates_rule():
    import torch

    from augflow_dsl.language.models import TrainSpec
    from augflow_dsl.runtime.ema import EMA

    assert TrainSpec().ema_warmup is True
    model = torch.nn.Linear(2, 1, bias=False)
    plain, warm = EMA(model, 0.99), EMA(model, 0.99, warmup=True)
    assert [warm.decay_at(n) for n in (1, 8, 890, 5000)] == [2 / 11, 9 / 18, 0.99, 0.99]
    assert plain.decay_at(1) == 0.99
    targets = [torch.full((1, 2), float(k)) for k in range(1, 4)]
    for t in targets:  # weights 1, 2, 3 after three updates
        with torch.no_grad():
            model.weight.copy_(t)
        plain.update(model)
        warm.update(model)
    # plain: 1, then 0.99 * 1 + 0.01 * 2, ...; warm-up: 1, then (2/11) * 1 + (9/11) * 2, then lerp by 1 - 3/12
    w2 = 2 / 11 * 1 + 9 / 11 * 2
    assert float(warm.module.weight[0, 0]) == pytest.approx(3 / 12 * w2 + 9 / 12 * 3)
    assert float(plain.module.weight[0, 0]) == pytest.approx(0.99 * (0.99 + 0.02) + 0.03)


# --- ONNX verification on data-like inputs: a file off by 30 nats must fail even where random inputs hide it

def test_onnx_log_prob_is_verified_on_the_models_samples(monkeypatch):
    import numpy as np
    import onnxruntime
    import torch

    import augflow_dsl as af
    from augflow_dsl.tools.onnx_export.verify import verify_onnx

    model = af.compile(str(Path(__file__).resolve().parents[1] / "specs" / "toy-glow3.flow")).eval()
    with torch.no_grad():  # a model concentrated near 0, as a trained one is near its data
        model.steps[0].log_scale.fill_(12.0)
    random_lp = model.log_prob(torch.randn(64, 2)).abs().min()
    assert random_lp > 1e6  # where a relative error of 30 nats is invisible

    class OffBy30:  # an exported file whose log p is 30 nats off
        def __init__(self, *a, **k):
            pass

        def run(self, _, feeds):
            with torch.no_grad():
                return [model._forward_plan(torch.from_numpy(feeds["x"])).numpy().astype(np.float32) + 30.0]

    monkeypatch.setattr(onnxruntime, "InferenceSession", OffBy30)
    out = verify_onnx(model, "x.onnx", "log_prob", ["x"], [], batch=5, seed=1)
    assert out["inputs"] == "model samples" and out["max_rel_diff"] > 1e-2 and not out["ok"]


# --- sample grids: digits (levels 0 .. 16 stored in 5 bits) draw level 16 white

def test_digit_grids_are_scaled_by_the_data_sets_levels(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    import augflow_dsl as af
    from augflow_dsl.runtime.run_io import write_samples

    spec = af.loads("flow: d\ndata: {shape: [1, 8, 8], bits: 5, dataset: digits}\nstages: [squeeze, actnorm]\n"
                    "prior: normal\n", "d.flow")
    x = torch.full((4, 1, 8, 8), 16.0)
    x[:, :, :4] = 8.0
    write_samples(x, str(tmp_path / "g.png"), spec=spec, meta={})
    img = np.asarray(Image.open(tmp_path / "g.png").convert("L"))
    assert img.max() == 255 and 126 <= np.median(img[img < 255]) <= 129  # 16 -> white, 8 -> mid grey


# --- Security 5: no environment-variable fault hook in production code (tests patch runtime.step.TrainHooks)

def test_no_fault_injection_hook_in_production_code():
    root = Path(__file__).resolve().parents[1]
    for path in [*(root / "augflow_dsl").rglob("*.py"), *(root / "runtime").rglob("*.py")]:
        assert "AUGFLOW_FAULT" not in path.read_text(), path


# --- issue 24, losing work: items 2 (last.pt gone) and 5 (partial checkpoints left by kills)

def test_resume_without_last_pt_refuses_and_stale_partials_are_removed(tmp_path, capsys):
    from augflow_dsl.cli import main

    toy = str(Path(__file__).resolve().parents[1] / "specs" / "toy-glow3.flow")
    run = tmp_path / "run"
    fast = ["--log-every", "1", "--eval-every", "2", "--eval-images", "16", "--no-tensorboard"]
    assert main(["train", toy, "--run", str(run), "--steps", "2", *fast]) == 0
    ckpts = run / "checkpoints"
    assert (ckpts / "best.pt").exists()
    stale = ckpts / ".last.pt.k3j2h1.tmp"
    stale.write_bytes(b"partial")
    (ckpts / "last.pt").unlink()
    best, metrics = (ckpts / "best.pt").read_bytes(), (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "4"]) != 0
    err = capsys.readouterr().err
    assert "checkpoints/last.pt is missing" in err and "new --run folder" in err and "Traceback" not in err
    assert (ckpts / "best.pt").read_bytes() == best and (run / "metrics.jsonl").read_text() == metrics
    assert not stale.exists()
