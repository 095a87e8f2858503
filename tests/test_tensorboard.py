"""TensorBoard events of a run (runtime.tensorboard), read back with tensorboard's own
``EventAccumulator``: every scalar equals its ``metrics.jsonl`` field at the same step, the sample grids
and the start-up texts are there, a crash and a resume leave each step once (the resumed writer purges
what the crashed attempt wrote past the checkpoint), and ``--no-tensorboard`` writes nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SPECS_DIR

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from augflow_dsl.cli import main  # noqa: E402
from augflow_dsl.runtime.tensorboard import scalars_of  # noqa: E402

TOY = str(SPECS_DIR / "toy-glow3.flow")
STEPS = 10


class Crash(Exception):
    pass


def _trainer(run: Path, steps: int, crash_at: int | None = None):
    from augflow_dsl.language.load import load
    from augflow_dsl.runtime.step import TrainHooks
    from augflow_dsl.runtime.train import Trainer, TrainOptions

    class Hooks(TrainHooks):
        def after_step(self, step: int) -> None:
            if step == crash_at:
                raise Crash(step)

    spec = load(TOY)
    opts = TrainOptions(run=str(run), steps=steps, batch=8, log_every=1, eval_every=5, eval_images=16,
                        checkpoint_every=4, sample_n=16, final_eval=False)
    return Trainer(spec, {}, {}, opts, hooks=Hooks())


def events(run: Path) -> EventAccumulator:
    ea = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    return ea


def expected(run: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for tag, value in scalars_of(row).items():
            out.setdefault(tag, []).append((row["step"], value))
    return out


def test_events_equal_metrics_after_a_crash_and_resume(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Crash):
        _trainer(run, STEPS, crash_at=7).run()          # last.pt at step 4; rows and events up to 7
    assert max(e.step for e in events(run).Scalars("train/loss")) == 7
    result = _trainer(run, STEPS).run()                 # resumes from step 4
    assert result.stopped == "done" and result.step == STEPS

    ea = events(run)
    want = expected(run)
    assert set(ea.Tags()["scalars"]) == set(want) == {"train/loss", "train/bpd", "train/lr", "train/grad_norm",
                                                       "train/images_per_s", "eval/test_bpd"}
    for tag, rows in want.items():
        got = [(e.step, e.value) for e in ea.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in rows], tag       # each step once, in order
        assert [s for s, _ in rows] == sorted(set(s for s, _ in rows)), tag
        assert [v for _, v in got] == pytest.approx([v for _, v in rows], rel=1e-6), tag  # float32 events
    assert [s for s, _ in want["train/loss"]] == list(range(1, STEPS + 1))
    assert [e.step for e in ea.Images("samples")] == [5, 10]
    texts = {t: ea.Tensors(t) for t in ea.Tags()["tensors"]}
    spec_text = texts["spec/text_summary"][0].tensor_proto.string_val[0].decode()
    assert [e.step for e in texts["spec/text_summary"]] == [0] and "flow: toy-glow3" in spec_text
    split = texts["parameters/text_summary"][0].tensor_proto.string_val[0].decode()
    assert "| flow | 8,280 |" in split and "| total | 8,280 |" in split and "| trainable (torch) |" in split


def test_no_tensorboard_writes_no_events(tmp_path):
    run = tmp_path / "quiet"
    code = main(["train", TOY, "--run", str(run), "--steps", "2", "--batch", "8", "--log-every", "1",
                 "--eval-images", "16", "--set", "train.eval_samples=1", "--no-tensorboard", "--json"])
    assert code == 0
    assert (run / "metrics.jsonl").is_file() and not (run / "tb").exists()


def test_a_resumed_writer_sorts_after_the_files_it_purges(tmp_path, monkeypatch):
    """The flake CI hit: the crashed attempt's and the resumed writer's files opened in the same second,
    and the process-wide counter went from 9 to 10, so the resumed file sorted first and TensorBoard read
    the crashed attempt's events as the later ones. The resumed writer now opens in a later second."""
    from tensorboard.summary.writer import event_file_writer

    from augflow_dsl.runtime.tensorboard import TensorBoardLog

    folder = tmp_path / "tb"
    monkeypatch.setattr(event_file_writer._global_uid, "_value", 9)
    first = TensorBoardLog(folder)
    for step in range(1, 8):
        first.row({"step": step, "loss": float(step), "bpd": 1.0, "lr": 1e-3, "grad_norm": 1.0,
                   "images_per_s": 1.0})
    first.close()
    resumed = TensorBoardLog(folder, resume_step=4)
    for step in range(5, 11):
        resumed.row({"step": step, "loss": 100.0 + step, "bpd": 1.0, "lr": 1e-3, "grad_norm": 1.0,
                     "images_per_s": 1.0})
    resumed.close()
    ea = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    ea.Reload()
    got = [(e.step, e.value) for e in ea.Scalars("train/loss")]
    assert got == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)] + [(s, 100.0 + s) for s in range(5, 11)]
