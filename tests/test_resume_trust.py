"""Issue 24, "losing work, or keeping bad work": divergence through finite values never costs the last
good checkpoint, a resume may change only lr / clip / warmup / steps and says so in config.json, edits
to config.json that the checkpoint contradicts are refused, the log after a resume is the same bit for
bit when --log-every does not divide the checkpoint interval, the thread count is the run's, and a
resume asked for fewer steps than done says so (in the first test). All on toy-glow3 (2-D,
milliseconds a step), in-process. Checked: every test here fails on the code of commit cc80ca9.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
import torch

from conftest import SPECS_DIR

TOY = str(SPECS_DIR / "toy-glow3.flow")
QUIET = ["--eval-every", "1000", "--eval-images", "16", "--no-tensorboard"]


@pytest.fixture(autouse=True)
def no_curves(monkeypatch):
    """curves.png (matplotlib: seconds a run here) is not what these tests are about."""
    monkeypatch.setattr("augflow_dsl.runtime.train.plot_curves", lambda *a, **k: None)


@pytest.fixture
def here(capsys):
    from augflow_dsl.cli import main

    def run(*args: str):
        try:
            code = main(["train", *args])
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["augflow-dsl", "train", *args], code, out, err)
    return run


def rows(run) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def train_losses(run) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in rows(run) if "split" not in r}


def ckpt(run) -> dict:
    from augflow_dsl.compiler.model_file import read_model_file
    return read_model_file(run / "checkpoints" / "last.pt")


def test_divergence_through_finite_losses_keeps_the_good_checkpoint_and_resume_takes_a_new_lr(tmp_path, here):
    """lr 5 (warmed up over 100 steps) takes toy-glow3's loss from 3.3 to 17 bits/dim by step 9, all finite.
    Before the guard the run went on and last.pt held the diverged weights."""
    run = tmp_path / "run"
    r = here(TOY, "--run", str(run), "--steps", "40", "--checkpoint-every", "3", "--log-every", "1", *QUIET,
             "--set", "train.lr=5", "--set", "train.warmup=100")
    assert r.returncode == 1, r.stderr
    assert "the run diverged at step 9" in r.stderr and "median m + 1 * max(|m|, 1)" in r.stderr
    assert "checkpoint NOT written" in r.stderr and "--set train.lr=0.5" in r.stderr
    assert ckpt(run)["step"] == 6  # the step-9 weights were refused; step 6's kept
    assert all(torch.isfinite(v).all() for v in ckpt(run)["model"].values() if v.is_floating_point())
    assert max(train_losses(run)) == 9

    # the advice works: a resume may lower the lr; the change is recorded at the checkpoint's step
    r = here("--resume", str(run), "--set", "train.lr=0.001", "--steps", "12", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["step"] == 12 and ckpt(run)["train"]["lr"] == 0.001
    cfg = json.loads((run / "config.json").read_text())
    assert [(c["step"], c["train"], c["options"]) for c in cfg["changes"]] == [(6, {"lr": 0.001}, {"steps": 12})]
    assert cfg["train_overrides"] == {"lr": 5, "warmup": 100}  # what the run started with stays
    # a later plain resume keeps the recorded lr and length, and says there is nothing left to train
    r = here("--resume", str(run), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["step"] == 12, r.stderr
    assert "already at step 12, its full length" in r.stderr
    # a resume asked for fewer steps than done (item 10: it said "stopped: done")
    r = here("--resume", str(run), "--steps", "5")
    assert r.returncode == 1
    assert "past the asked length of 5 steps (step 12 >= 5)" in r.stderr and "--steps N' with N > 12" in r.stderr
    # only the documented keys
    r = here("--resume", str(run), "--set", "train.batch=8")
    assert r.returncode == 1 and "may change only train.clip, train.lr, train.steps, train.warmup" in r.stderr


@pytest.mark.parametrize("edit, field", [(lambda c: c["options"].update(batch=32), "batch"),
                                         (lambda c: c["train_overrides"].update(lr=0.1), "lr")])
def test_an_edited_config_that_the_checkpoint_contradicts_is_refused(tmp_path, here, edit, field):
    run = tmp_path / "run"
    assert here(TOY, "--run", str(run), "--steps", "3", "--log-every", "1", *QUIET).returncode == 0
    cfg = json.loads((run / "config.json").read_text())
    edit(cfg)
    (run / "config.json").write_text(json.dumps(cfg))
    r = here("--resume", str(run), "--steps", "6")
    assert r.returncode == 1, r.stderr
    assert "config.json does not match the checkpoint" in r.stderr and f"{field}:" in r.stderr
    assert ckpt(run)["step"] == 3


def test_resume_logs_the_same_window_when_log_every_does_not_divide_the_checkpoint(tmp_path, here, monkeypatch):
    """A SIGTERM after step 5 checkpoints mid-window (--log-every 4): the step-8 row must still average
    steps 5..8. The resumed run also gets the recorded thread count back."""
    from augflow_dsl.runtime.step import TrainHooks

    common = ["--steps", "12", "--checkpoint-every", "100", "--log-every", "4", "--threads", "1", *QUIET]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert here(TOY, "--run", str(whole), *common).returncode == 0
    seen = []

    def after_step(self, step):
        seen.append(torch.get_num_threads())
        if step == 5 and not (cut / "checkpoints" / "last.pt").exists():
            os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(TrainHooks, "after_step", after_step)
    assert here(TOY, "--run", str(cut), *common).returncode == 0
    assert ckpt(cut)["step"] == 5 and json.loads((cut / "config.json").read_text())["options"]["threads"] == 1
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen.clear()
        assert here("--resume", str(cut)).returncode == 0
        assert torch.get_num_threads() == 2  # the process's own count is given back
    finally:
        torch.set_num_threads(threads)
    assert seen and set(seen) == {1}
    assert train_losses(cut) == train_losses(whole) and sorted(train_losses(cut)) == [4, 8, 12]


def test_diverged_steps_are_skipped_and_stop_the_run(tmp_path, here):
    """Without a checkpoint in reach, the per-step rule alone: diverged losses skip their updates and
    --max-bad-steps of them in a row stop the run (before the guard it ran on to step 40, exit 0)."""
    run = tmp_path / "run"
    r = here(TOY, "--run", str(run), "--steps", "40", "--checkpoint-every", "100", "--log-every", "1",
             "--max-bad-steps", "2", *QUIET, "--set", "train.lr=5", "--set", "train.warmup=100")
    assert r.returncode == 1, r.stderr
    assert "update skipped (2 in a row)" in r.stderr and "No checkpoint was written yet" in r.stderr
    assert not (run / "checkpoints" / "last.pt").exists()


def test_the_rule_in_bits_per_dim():
    from augflow_dsl.runtime.divergence import LN2, DivergenceGuard

    g = DivergenceGuard(dims=2, factor=1.0)
    nats = 2 * LN2  # 1 bit/dim
    assert not g.observe(3 * nats) and g.limit_bpd() == 6.0  # m = 3: twice the median
    assert g.observe(6.01 * nats) and not g.observe(5.99 * nats)  # the spike stays out of the window
    assert list(g.history) == [3 * nats, 5.99 * nats]
    h = DivergenceGuard(dims=2)
    h.load_state_dict(g.state_dict())
    assert list(h.history) == list(g.history)
    neg = DivergenceGuard(dims=2, factor=2.0)
    neg.observe(-0.5 * nats)
    assert neg.limit_bpd() == 1.5  # |m| < 1: factor bits/dim above the median
