"""The one model file format (augflow_dsl.compiler.model_file): what ``compile --out``, ``train`` and
``import`` write is read by ``af.load_model`` into a model whose log_prob is the producer's, and the
older formats ("augflow-dsl/1", "augflow-dsl-checkpoint" version 1) still load."""
from __future__ import annotations

import pytest
import torch

import augflow_dsl as af
from augflow_dsl.cli import main
from augflow_dsl.compiler import model_file as mf
from conftest import SPECS_DIR
from test_import import DF_SMALL, DF_SPEC, df_small_checkpoint  # noqa: F401 - a fixture (a tiny DenseFlow)

TOY = str(SPECS_DIR / "toy-glow3.flow")
FAST = ["--log-every", "1", "--eval-every", "1000", "--eval-images", "16"]


def _same_state(a, b) -> None:
    """Every tensor of the state equal: a fresh flow's log_prob hides unloaded weights (its couplings
    start at the identity and its 1x1 convolutions are rotations), the state does not."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), [k for k in sa if not torch.equal(sa[k], sb[k])]


def _same_log_prob(a, b, x, seed: int = 0) -> None:
    _same_state(a, b)
    a.eval(), b.eval()
    with torch.no_grad():
        torch.manual_seed(seed)
        la = a.log_prob(x)
        torch.manual_seed(seed)
        lb = b.log_prob(x)
    assert torch.isfinite(la).all() and torch.equal(la, lb)


def _raw(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_compile_out_is_a_compiled_model_file(tmp_path, capsys):
    out = tmp_path / "toy.pt"
    torch.manual_seed(0)
    assert main(["compile", TOY, "--set", "hidden=8", "--out", str(out)]) == 0
    d = _raw(out)
    assert (d["format"], d["version"], d["kind"]) == (mf.FORMAT, mf.VERSION, "compiled")
    assert d["overrides"] == {"hidden": 8} and d["spec_hash"] == mf.spec_hash(d["spec_text"], {"hidden": 8})
    torch.manual_seed(0)
    producer = af.compile(TOY, {"hidden": 8})
    model, spec, meta = af.load_model(out)
    assert meta["kind"] == "compiled" and meta["weights"] == "model" and spec.variables["hidden"] == 8
    _same_log_prob(producer, model, torch.randn(32, 2))
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed away


def test_saved_weights_off_their_initialisation_come_back(tmp_path):
    """Weights moved off their initialisation (couplings no longer the identity) give the producer's
    log_prob after a save and a load, and differ from a fresh model's."""
    torch.manual_seed(1)
    producer = af.compile(TOY, {"hidden": 8})
    x = torch.randn(64, 2)
    producer.initialize(x)
    with torch.no_grad():
        for p in producer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    out = tmp_path / "moved.pt"
    mf.save_compiled(out, producer, {"hidden": 8})
    model, _, _ = af.load_model(out)
    _same_log_prob(producer, model, torch.randn(32, 2))
    with torch.no_grad():
        assert not torch.allclose(af.compile(TOY, {"hidden": 8}).eval().log_prob(x), model.log_prob(x))


def test_train_writes_a_trained_model_file_with_its_resume_state(tmp_path, monkeypatch, capsys):
    from augflow_dsl.runtime.step import TrainHooks
    live = {}
    monkeypatch.setattr(TrainHooks, "after_update", lambda self, step, model, params: live.update(model=model))
    run = tmp_path / "run"
    assert main(["train", TOY, "--run", str(run), "--steps", "3", "--set", "train.ema=0.9", *FAST]) == 0
    d = _raw(run / "checkpoints" / "last.pt")
    assert (d["format"], d["version"], d["kind"]) == (mf.FORMAT, mf.VERSION, "trained")
    for key in ("optimizer", "step", "epoch", "position", "rng", "train", "best_bpd", "world_size", "elapsed",
                "train_overrides", "ema"):
        assert key in d, key
    assert d["step"] == 3 and d["ema"] is not None
    model, _, meta = af.load_model(run, ema=False)
    assert meta["kind"] == "trained" and meta["weights"] == "model" and meta["step"] == 3
    _same_log_prob(live["model"], model, torch.randn(32, 2))
    ema_model, _, meta = af.load_model(run)
    assert meta["weights"] == "ema"
    with torch.no_grad():
        assert not torch.equal(ema_model.log_prob(torch.ones(4, 2)), model.log_prob(torch.ones(4, 2)))


def test_import_writes_an_imported_model_file(df_small_checkpoint, tmp_path, capsys):  # noqa: F811
    from augflow_dsl.compiler.model import compile_spec
    from augflow_dsl.interop.importer import import_checkpoint

    path = df_small_checkpoint[0]
    out = tmp_path / "model.pt"
    sets = [a for s in DF_SMALL for a in ("--set", s)]
    assert main(["import", "denseflow", str(path), "--spec", DF_SPEC, "--out", str(out), *sets]) == 0
    d = _raw(out)
    assert (d["format"], d["version"], d["kind"]) == (mf.FORMAT, mf.VERSION, "imported")
    assert d["imported"]["kind"] == "denseflow" and d["step"] == 0
    imp = import_checkpoint("denseflow", path, DF_SPEC, DF_SMALL)
    producer = compile_spec(imp.spec)
    producer.load_state_dict(imp.state)
    model, _, meta = af.load_model(out)
    assert meta["kind"] == "imported"
    _same_log_prob(producer, model, torch.randint(0, 256, (2, 3, 32, 32)).float())


class _Unsafe:
    """Any class: a pickle of it is refused by the weights_only reader."""


def test_old_formats_still_load(tmp_path):
    torch.manual_seed(1)
    producer = af.compile(TOY, {"hidden": 8})
    state = producer.state_dict()
    old_compiled = tmp_path / "old-compiled.pt"
    torch.save({"format": "augflow-dsl/1", "spec_text": producer.spec_text, "name": producer.name,
                "overrides": {"hidden": 8}, "state_dict": state}, old_compiled)
    old_ckpt = tmp_path / "old-ckpt.pt"
    torch.save({"format": "augflow-dsl-checkpoint", "version": 1, "spec_text": producer.spec_text,
                "spec_file": TOY, "spec_hash": mf.spec_hash(producer.spec_text, {"hidden": 8}),
                "overrides": {"hidden": 8}, "model": state, "ema": None, "optimizer": None, "step": 5, "epoch": 0,
                "position": 5, "rng": None, "train": None, "best_bpd": None, "world_size": 1}, old_ckpt)
    x = torch.randn(16, 2)
    for path, kind in ((old_compiled, "compiled"), (old_ckpt, "trained")):
        model, _, meta = af.load_model(path)
        assert meta["kind"] == kind and meta["version"] == mf.VERSION
        _same_log_prob(producer, model, x)
    assert mf.read_model_file(old_ckpt)["step"] == 5


def test_foreign_newer_and_unsafe_files_are_refused(tmp_path):
    p = tmp_path / "f.pt"
    torch.save({"weights": torch.zeros(2)}, p)
    with pytest.raises(mf.ModelFileError, match="not an augflow-dsl checkpoint"):
        af.load_model(p)
    torch.save({"format": mf.FORMAT, "version": mf.VERSION + 1, "kind": "compiled", "spec_text": "", "model": {}}, p)
    with pytest.raises(mf.ModelFileError, match="newer"):
        mf.read_model_file(p)
    torch.save({"format": mf.FORMAT, "version": mf.VERSION, "payload": _Unsafe()}, p)
    with pytest.raises(mf.ModelFileError, match="not unpickled for safety"):
        mf.read_model_file(p)
