"""Issue 24, run-folder trust: one writer per run folder (a lock with pid and host, stale locks
replaced), a torn metrics line or a full disk never costs the run, damaged checkpoints and
config.json are refused by field (tensor checksum, finite weights, every field validated), and an
unwritable checkpoints/ is found before the first step. Each test failed on the code before it."""
from __future__ import annotations

import copy
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import zipfile

import pytest

from augflow_dsl.compiler import model_file as mf
from augflow_dsl.runtime import run_folder as rf
from augflow_dsl.runtime.metrics import MetricsLog
from augflow_dsl.runtime.run_folder import RunFolder, TrainError
from conftest import SPECS_DIR

TOY = str(SPECS_DIR / "toy-glow3.flow")  # a 2-D flow: the fastest spec to train
FAST = ["--log-every", "1", "--eval-every", "1000", "--eval-images", "16", "--checkpoint-every", "1"]


@pytest.fixture
def here(capsys):
    """``augflow-dsl ARGS`` in this process: (exit code, stderr)."""
    from augflow_dsl.cli import main

    def run(*args: str):
        code = main(list(args))
        return code, capsys.readouterr().err
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A toy-glow3 run folder, 2 steps (copied by the tests that change it)."""
    from augflow_dsl.cli import main

    run = tmp_path_factory.mktemp("trust") / "run"
    assert main(["train", TOY, "--run", str(run), "--steps", "2", *FAST]) == 0
    return run


@pytest.fixture(scope="module")
def trained_state(trained):
    return mf.read_model_file(trained)


def _copy(trained, tmp_path):
    return shutil.copytree(trained, tmp_path / "run")


# ----------------------------------------------------------------------------- item 3: one writer
def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    a, b = RunFolder(tmp_path / "run"), RunFolder(tmp_path / "run")
    a.prepare()
    with pytest.raises(TrainError, match=rf"pid {os.getpid()} on host {socket.gethostname()}"):
        b.prepare()
    code = ("import sys; from augflow_dsl.runtime.run_folder import RunFolder, TrainError\n"
            "try: RunFolder(sys.argv[1]).prepare()\nexcept TrainError as e: print(e); sys.exit(3)")
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                           timeout=60)
    assert other.returncode == 3 and f"pid {os.getpid()}" in other.stdout, other.stdout + other.stderr
    a.release()
    assert not (tmp_path / "run" / ".lock").exists()
    assert b.prepare() is None  # free again
    b.release()


def test_a_stale_lock_is_replaced(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    f = RunFolder(folder)
    note = f.prepare()
    assert note and "stale" in note and f"pid {dead.pid}" in note
    assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
    f.release()


def test_ddp_ranks_all_learn_that_rank_0_was_refused(tmp_path, monkeypatch):
    """Rank 0's refusal reaches the other ranks through one collective (any_rank), so none of
    them waits in a later collective for a rank 0 that has gone."""
    from augflow_dsl.runtime import distributed as D

    calls = []
    monkeypatch.setattr(D, "any_rank", lambda flag, world: calls.append(flag) or True)
    holder = RunFolder(tmp_path / "run")
    holder.prepare()
    with pytest.raises(TrainError, match="being trained by another process"):
        RunFolder(tmp_path / "run").prepare_ranks(D.World(rank=0, size=2))
    with pytest.raises(TrainError, match="rank 0 could not prepare"):
        RunFolder(tmp_path / "run").prepare_ranks(D.World(rank=1, size=2))
    assert calls == [True, False]
    holder.release()


# ----------------------------------------------------------------------------- item 4: torn lines, full disk
def test_a_torn_last_metrics_line_is_dropped_with_a_warning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    warned = []
    MetricsLog(path).truncate_after(5, say=warned.append)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2]
    assert warned and "line 3 is torn" in warned[0]
    path.write_text('{"step": 1}\n{"st\n{"step": 2}\n')
    with pytest.raises(TrainError, match="line 2 is not a JSON object"):
        MetricsLog(path).truncate_after(5)


def test_a_full_disk_is_a_clean_stop_that_keeps_the_checkpoint(tmp_path, here, monkeypatch):
    run = tmp_path / "run"
    real = mf.write_atomic
    done = []

    def full(path, payload, make_folder=False):
        if done:
            raise OSError(errno.ENOSPC, "No space left on device")
        done.append(payload["step"])
        real(path, payload, make_folder)

    monkeypatch.setattr(mf, "write_atomic", full)
    code, err = here("train", TOY, "--run", str(run), "--steps", "3", *FAST)
    assert code == 1 and "Traceback" not in err, err
    assert "disk is full" in err and "MiB free" in err and str(run / "checkpoints" / "last.pt") in err
    assert mf.read_model_file(run)["step"] == done[0] == 1
    log = MetricsLog(tmp_path / "m.jsonl")
    monkeypatch.setattr(type(log.path), "open", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EDQUOT, "q")))
    with pytest.raises(rf.WriteFailed, match="quota"):
        log.write({"step": 1})


# ----------------------------------------------------------------------------- item 6: damaged checkpoints
def _flip(path, tmp_path):
    """A copy of model file ``path`` with 16 bytes of its first tensor record flipped."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(16):
        data[start + 8 + 7 * i] ^= 0x5A
    out = tmp_path / "flipped.pt"
    out.write_bytes(bytes(data))
    return out


def test_flipped_bytes_are_refused_by_every_reader(trained, tmp_path, here):
    bad = _flip(trained / "checkpoints" / "last.pt", tmp_path)
    with pytest.raises(mf.ModelFileError, match="do not match the file's checksum"):
        mf.read_model_file(bad)
    for args in (["eval", str(bad), "--limit", "8"], ["sample", str(bad), "--n", "4", "--out", str(tmp_path / "s.png")],
                 ["export", str(bad), "--onnx", str(tmp_path / "m.onnx")]):
        code, err = here(*args)
        assert code == 1 and "checksum" in err and str(bad) in err and "Traceback" not in err, (args, err)
    run = _copy(trained, tmp_path)
    shutil.copy(bad, run / "checkpoints" / "last.pt")
    code, err = here("train", "--resume", str(run))
    assert code == 1 and "checksum" in err, err


def test_version_2_files_without_a_checksum_still_load(trained_state, tmp_path):
    d = copy.deepcopy(trained_state)
    d["version"] = 2
    del d["checksum"]
    mf.write_atomic(tmp_path / "v2.pt", d)
    assert mf.read_model_file(tmp_path / "v2.pt")["step"] == 2


def _resave(run, change):
    d = mf.read_model_file(run)
    change(d)
    d.pop("checksum", None)
    mf.save_model_file(run / "checkpoints" / "last.pt", d.pop("kind"), **{
        k: d.pop(k) for k in ("spec_text", "spec_file", "spec_name", "overrides", "model", "ema")},
        **{k: v for k, v in d.items() if k not in ("format", "version", "spec_hash", "versions")})


def test_non_finite_weights_are_refused_on_resume(trained, tmp_path, here):
    run = _copy(trained, tmp_path)
    _resave(run, lambda d: next(v for v in d["model"].values() if v.is_floating_point()).fill_(float("nan")))
    code, err = here("train", "--resume", str(run), "--steps", "4")
    assert code == 1 and "not finite" in err and "Traceback" not in err, err


@pytest.mark.parametrize("change, field", [
    (lambda d: d.pop("optimizer"), "optimizer"),
    (lambda d: d.pop("rng"), "rng"),
    (lambda d: d.update(step=-1), "step"),
    (lambda d: d.update(position=10**6), "position"),
    (lambda d: d.update(optimizer=[1, 2]), "optimizer"),
    (lambda d: d.update(rng=[]), "rng"),
])
def test_every_checkpoint_field_is_checked(trained_state, change, field):
    d = copy.deepcopy(trained_state)
    change(d)
    with pytest.raises(mf.ModelFileError, match=f"'{field}"):
        rf.check_resume(d, "last.pt", steps_per_epoch=100, spec_hash=d["spec_hash"])


@pytest.mark.parametrize("change, field", [
    (lambda c: c["options"].update(checkpoint_every=0), "checkpoint_every"),
    (lambda c: c["options"].update(log_every="abc"), "log_every"),
    (lambda c: c["options"].update(device="tpu:9"), "device"),
    (lambda c: c.update(options=[1, 2]), "options"),
    (lambda c: [1, 2], "not a JSON object"),
])
def test_every_config_field_is_checked(trained, tmp_path, here, change, field):
    run = _copy(trained, tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    cfg = change(cfg) or cfg
    (run / "config.json").write_text(json.dumps(cfg))
    code, err = here("train", "--resume", str(run))
    assert code == 1 and field in err and "Traceback" not in err, err


# ----------------------------------------------------------------------------- item 9: unwritable checkpoints/
def test_an_unwritable_checkpoint_folder_is_refused_before_any_step(tmp_path, here, monkeypatch):
    real = os.open

    def no_checkpoints(path, flags, *a, **k):
        if os.path.basename(os.path.dirname(os.fspath(path))) == "checkpoints" and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", no_checkpoints)
    run = tmp_path / "run"
    code, err = here("train", TOY, "--run", str(run), "--steps", "2", *FAST)
    assert code == 1 and "cannot write the checkpoint folder" in err and "Traceback" not in err, err
    assert not (run / "metrics.jsonl").exists()  # no step ran
