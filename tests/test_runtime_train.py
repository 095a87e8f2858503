"""The training runtime end to end: loss falls, kill-and-resume is bit-identical, SIGTERM checkpoints,
NaN steps never cost the good checkpoint, 2 gloo processes equal 1, and bad input is refused clearly.

Runs that must survive a SIGKILL or use torchrun go through a subprocess (one torch thread each);
the rest run in-process.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, SPECS_DIR

DIGITS = str(SPECS_DIR / "digits-small.flow")
TOY = str(SPECS_DIR / "toy-glow3.flow")
FAST = ["--log-every", "1", "--eval-every", "1000", "--eval-images", "16"]


def _env(**extra) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0", **extra)
    return env


# Fault injection, installed from the test side through the Trainer's hooks (runtime.step.TrainHooks):
# "nan@4-1000" (a NaN loss at updates 4..1000), "poison@4" (NaN weights after update 4), "kill@7"
# (SIGKILL once update 7 is logged). ``step`` is what each hook receives (TrainHooks' docstring).
def _at(spec: str, what: str, step: int) -> bool:
    for item in spec.split(","):
        kind, _, at = item.partition("@")
        lo, _, hi = at.partition("-")
        if kind == what and lo and int(lo) <= step <= int(hi or lo):
            return True
    return False


def install_fault(setattr, fault: str) -> None:
    """Patch TrainHooks (with ``setattr``: monkeypatch.setattr, or plain setattr in a subprocess)."""
    import torch as _torch

    from augflow_dsl.runtime.step import TrainHooks
    base_loss, base_update, base_step = TrainHooks.loss, TrainHooks.after_update, TrainHooks.after_step

    def loss(self, step, value):
        value = base_loss(self, step, value)
        return value * float("nan") if _at(fault, "nan", step) else value

    def after_update(self, step, model, params):
        base_update(self, step, model, params)
        if _at(fault, "poison", step):
            with _torch.no_grad():
                params[0].fill_(float("nan"))

    def after_step(self, step):
        base_step(self, step)
        if _at(fault, "kill", step):
            os.kill(os.getpid(), signal.SIGKILL)

    setattr(TrainHooks, "loss", loss)
    setattr(TrainHooks, "after_update", after_update)
    setattr(TrainHooks, "after_step", after_step)


# ``python -c RUNNER FAULT train ARGS``: this file's install_fault, then the CLI
RUNNER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_runtime_train import install_fault
install_fault(setattr, sys.argv[1])
from augflow_dsl.cli import main
sys.exit(main(sys.argv[2:]))
"""


def train(*args: str, fault: str | None = None, timeout: float = 240, **env) -> subprocess.CompletedProcess:
    if fault:
        cmd = [sys.executable, "-c", RUNNER.format(tests=str(Path(__file__).resolve().parent)), fault, "train", *args]
    else:
        cmd = [sys.executable, "-m", "augflow_dsl", "train", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=_env(**env))


@pytest.fixture
def here(capsys, monkeypatch):
    """``augflow-dsl train ARGS`` in this process (no start-up cost), as a CompletedProcess."""
    from augflow_dsl.cli import main

    def run(*args: str, fault: str | None = None):
        if fault:
            install_fault(monkeypatch.setattr, fault)
        try:
            code = main(["train", *args])
        except SystemExit as e:  # argparse usage errors
            code = e.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["augflow-dsl", "train", *args], code, out, err)
    return run


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {r["step"]: r["loss"] for r in rows if "split" not in r}


def test_loss_falls_and_run_folder_is_complete(tmp_path, here):
    run = tmp_path / "run"
    r = here(DIGITS, "--run", str(run), "--steps", "40", "--log-every", "5", "--eval-every", "20",
             "--eval-images", "32", "--checkpoint-every", "20", "--set", "train.lr=5e-3", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["step"] == 40 and result["stopped"] == "done"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [x for x in rows if "split" not in x]
    for key in ("step", "epoch", "loss", "bpd", "lr", "grad_norm", "images_per_s"):
        assert all(key in x for x in train_rows), key
    assert train_rows[-1]["bpd"] < train_rows[0]["bpd"] - 0.3, [x["bpd"] for x in train_rows]
    evals = [x for x in rows if x.get("split") == "test" and x["samples"] == 1]
    assert [e["step"] for e in evals] == [20, 40] and all(math.isfinite(e["bpd"]) for e in evals)
    # the run ends with the spec's importance-weighted figure (digits-small: train.eval_samples 64)
    final = [x for x in rows if x.get("split") == "test" and x["samples"] > 1]
    assert [(e["step"], e["samples"], e["images"]) for e in final] == [(40, 64, 32)]
    assert final[0]["bpd"] == result["test_iw_bpd"] and math.isfinite(final[0]["bpd"])
    for f in ("config.json", "checkpoints/last.pt", "checkpoints/best.pt", "samples/step-20.png",
              "samples/step-40.png", "curves.png"):
        assert (run / f).is_file(), f
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["spec_text"] == Path(DIGITS).read_text() and cfg["train_overrides"] == {"lr": 5e-3}
    assert cfg["world_size"] == 1 and len(cfg["spec_hash"]) == 64 and "torch" in cfg["versions"]


def test_sigkill_then_resume_logs_the_same_losses_bit_for_bit(tmp_path, here):
    """digits-small draws noise everywhere (variational dequantization, cross-unit coupling) and keeps
    an EMA: a resume that missed any state would diverge at once."""
    common = ["--steps", "9", "--checkpoint-every", "3", *FAST]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert here(DIGITS, "--run", str(whole), *common).returncode == 0  # in this process; the cut run in others
    r = train(DIGITS, "--run", str(cut), *common, fault="kill@7")
    assert r.returncode == -signal.SIGKILL
    assert max(losses(cut)) == 7  # killed after logging step 7, past its last checkpoint (step 6)
    r = train("--resume", str(cut))
    assert r.returncode == 0, r.stderr
    assert losses(cut) == losses(whole)  # exact float equality, every step 1..9
    assert sorted(losses(cut)) == list(range(1, 10))


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "augflow_dsl", "train", DIGITS, "--run", str(run), "--steps",
                          "100000", "--checkpoint-every", "100000", *FAST], cwd=ROOT, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.2)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "stopped by SIGTERM" in err and "--resume" in err
    from augflow_dsl.compiler.model_file import read_model_file
    ck = read_model_file(run / "checkpoints" / "last.pt")
    assert ck["step"] >= 1 and ck["step"] == max(losses(run))


def test_nan_steps_are_skipped_and_never_cost_the_good_checkpoint(tmp_path, here):
    from augflow_dsl.compiler.model_file import read_model_file
    run = tmp_path / "run"
    # updates 4.. give a NaN loss: 4, 5, 6 are skipped, then the run stops (3 in a row)
    r = here(DIGITS, "--run", str(run), "--steps", "50", "--checkpoint-every", "2", "--max-bad-steps", "3", *FAST,
             fault="nan@4-1000")
    assert r.returncode == 1, r.stderr
    assert "step 4: non-finite loss" in r.stderr and "last good checkpoint is" in r.stderr
    ck = read_model_file(run / "checkpoints" / "last.pt")
    assert ck["step"] == 6  # written after two skipped steps: the weights are those of step 4
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_poisoned_weights_are_never_written(tmp_path, here):
    from augflow_dsl.compiler.model_file import read_model_file
    run = tmp_path / "run"
    r = here(DIGITS, "--run", str(run), "--steps", "50", "--checkpoint-every", "2", "--max-bad-steps", "2", *FAST,
             fault="poison@4")
    assert r.returncode == 1
    assert "checkpoint NOT written" in r.stderr
    ck = read_model_file(run / "checkpoints" / "last.pt")
    assert ck["step"] == 4 and all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("spec", [TOY, DIGITS], ids=["toy-glow3", "digits-small"])
def test_two_gloo_processes_equal_one(tmp_path, here, spec):
    """Same global batch and seed: the loss curve of 2 ranks equals 1 rank's, and both ranks' weights
    are identical afterwards. toy-glow3 draws no noise; digits-small draws variational dequantization
    and cross-unit noise in every pass, the same for each example on 1 or 2 ranks (runtime.noise)."""
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--steps", "5", "--batch", "64", *FAST, "--json"]
    r1 = here(spec, "--run", str(one), *args)
    assert r1.returncode == 0, r1.stderr
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                         "-m", "augflow_dsl", "train", spec, "--run-dir", str(two), *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=240, env=_env())
    assert r2.returncode == 0, r2.stderr[-3000:]
    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5]
    for s in a:
        assert b[s] == pytest.approx(a[s], rel=1e-5), (s, a[s], b[s])
    result = json.loads(r2.stdout.strip().splitlines()[-1])
    assert result["extra"]["max_rank_divergence"] == 0.0
    assert json.loads((two / "config.json").read_text())["world_size"] == 2


def test_corrupted_and_foreign_checkpoints_are_refused(tmp_path, here):
    run = tmp_path / "run"
    assert here(DIGITS, "--run", str(run), "--steps", "2", *FAST).returncode == 0
    # another spec in the same folder: refused, then accepted with --force
    r = here(DIGITS, "--run", str(run), "--steps", "2", "--set", "width=16", *FAST)
    assert r.returncode == 1 and "checkpoint of another spec" in r.stderr and "--force" in r.stderr
    assert "Traceback" not in r.stderr
    last = run / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    r = here("--resume", str(run))
    assert r.returncode == 1 and "not a readable checkpoint" in r.stderr and "Traceback" not in r.stderr
    last.write_bytes(b"\x00" * 100)
    r = here("--resume", str(run))
    assert r.returncode == 1 and "Traceback" not in r.stderr


def test_force_loads_matching_weights_of_another_spec(tmp_path, here):
    run = tmp_path / "run"
    assert here(DIGITS, "--run", str(run), "--steps", "2", *FAST).returncode == 0
    r = here(DIGITS, "--run", str(run), "--steps", "2", "--set", "width=16", "--force", *FAST)
    assert r.returncode == 0, r.stderr
    assert "--force: loaded the checkpoint's weights where they fit" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--set", "nosuch=3"], "no variable 'nosuch'"),
    (["--set", "train.nosuch=3"], "train.nosuch: unknown key"),
    (["--set", "train.lr=-1"], "train.lr"),
    (["--set", "train.augment=flip,rotate"], "train.augment"),
])
def test_bad_settings_are_refused(tmp_path, here, args, message):
    r = here(DIGITS, "--run", str(tmp_path / "run"), "--steps", "1", *args)
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_data_that_does_not_match_the_spec_is_refused(tmp_path, here):
    spec = tmp_path / "wrong.flow"
    spec.write_text(Path(DIGITS).read_text().replace("shape: [1, 8, 8]", "shape: [1, 16, 16]"))
    r = here(str(spec), "--run", str(tmp_path / "run"), "--steps", "1")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "[1, 8, 8]" in r.stderr.replace("(", "[").replace(")", "]") or "8, 8" in r.stderr, r.stderr


def test_unwritable_run_folder_and_usage_errors(tmp_path, here):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = here(DIGITS, "--run", str(blocker / "run"), "--steps", "1")
    assert r.returncode == 1 and "cannot write the run folder" in r.stderr
    r = here("--resume", str(tmp_path / "nothing"))
    assert r.returncode == 1 and "not a run folder" in r.stderr
    r = here(DIGITS, "--resume", str(tmp_path))
    assert r.returncode == 2
    r = here(DIGITS, "--steps", "0")
    assert r.returncode == 2


def test_compile_train_is_train(tmp_path, capsys):
    run = tmp_path / "run"
    from augflow_dsl.cli import main
    assert main(["compile", "--train", TOY, "--run", str(run), "--steps", "3", *FAST, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 3 and (run / "checkpoints" / "last.pt").is_file()


def test_resume_continues_to_more_steps(tmp_path, here):
    run = tmp_path / "run"
    assert here(TOY, "--run", str(run), "--steps", "3", *FAST).returncode == 0
    r = here("--resume", str(run), "--steps", "5", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["step"] == 5 and sorted(losses(run)) == [1, 2, 3, 4, 5]


def test_steps_flag_gives_the_whole_run_unless_finetune_is_asked_for(tmp_path, here):
    """--steps N trains N updates in all, even for a spec with fine-tune epochs; --set
    train.finetune_epochs=K brings the fine-tune phase back (K epochs at finetune_lr after N)."""
    spec = tmp_path / "ft.flow"
    spec.write_text(Path(TOY).read_text().replace(
        "train: {", "train: {finetune_epochs: 3, finetune_lr: 1e-5, "))
    r = here(str(spec), "--run", str(tmp_path / "a"), "--steps", "4", "--batch", "16", *FAST, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["step"] == 4
    # a fine-tune epoch is the whole toy train split (1,000,000 points): a large batch keeps it to 20 steps
    r = here(str(spec), "--run", str(tmp_path / "b"), "--steps", "4", "--batch", "50000", "--set",
             "train.finetune_epochs=1", *FAST, "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    lrs = {x["step"]: x["lr"] for x in rows if "split" not in x}
    assert json.loads(r.stdout)["step"] > 4 and lrs[max(lrs)] == pytest.approx(1e-5)
