"""``augflow-dsl sweep``: a tiny grid trains and evaluates every point and writes every artefact; the
table's and the plot's figures are what ``eval`` gives for each run folder; a rerun retrains nothing;
a signal stops the sweep cleanly and the rerun resumes the interrupted point (bit-exact: its figures
equal those of a point never stopped); a changed grid, bad ``--set`` syntax and invalid points are
reported.

The grid is digits-small at width 8 with ``--steps 3`` and 2 importance samples: growth 0, 1, 2 x
units 2, 3, of which growth 0 is invalid (cross-unit coupling needs growth >= 1). It runs once, in
this process, for the module. Signals are sent by the process to itself at a fixed update (through
the runtime's fault hook) or at the start of an evaluation, so the interruptions are deterministic.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

import augflow_dsl as af
from augflow_dsl.cli import main
from conftest import SPECS_DIR

DIGITS = str(SPECS_DIR / "digits-small.flow")
TINY = ["--set", "width=8", "--samples", "2", "--eval-images", "16"]
GRID = [DIGITS, "--set", "growth=0,1,2", "--set", "units=2,3", "--steps", "3", *TINY]
VALID = ["growth=1,units=2", "growth=1,units=3", "growth=2,units=2", "growth=2,units=3"]
INVALID = ["growth=0,units=2", "growth=0,units=3"]


def sweep(*args: str) -> subprocess.CompletedProcess:
    """``augflow-dsl sweep ARGS`` in this process, its output captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["sweep", *args])
        except SystemExit as e:  # argparse usage errors
            code = e.code
    return subprocess.CompletedProcess(["augflow-dsl", "sweep", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep") / "grid"
    r = sweep(*GRID, "--out", str(folder), "--json")
    return folder, r


def rows_of(folder: Path) -> dict[str, dict]:
    return {p["name"]: p for p in json.loads((folder / "results.json").read_text())["points"]}


def table_cells(folder: Path) -> dict[str, list[str]]:
    """table.md's rows by point name (growth=G,units=U from the first two cells)."""
    lines = [x for x in (folder / "table.md").read_text().splitlines() if x.startswith("| ") and "---" not in x]
    header, *body = [[c.strip() for c in x.strip("|").split(" | ")] for x in lines]
    assert header[:2] == ["growth", "units"], header
    return {f"growth={c[0]},units={c[1]}": dict(zip(header, c)) for c in body}


def test_grid_trains_every_valid_point_and_writes_every_artefact(grid):
    folder, r = grid
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [p["name"] for p in out["points"]] == ["growth=0,units=2", "growth=0,units=3", *VALID]
    assert out["axes"] == {"growth": [0, 1, 2], "units": [2, 3]} and out["fixed"] == {"width": 8}
    for name in ("sweep.json", "results.json", "results.jsonl", "table.md", "plot.png"):
        assert (folder / name).is_file(), name
    assert (folder / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finished = [json.loads(x)["name"] for x in (folder / "results.jsonl").read_text().splitlines()]
    assert finished == VALID
    rows = rows_of(folder)
    for name in VALID:
        row = rows[name]
        assert row["status"] == "done" and row["steps"] == 3 and row["samples"] == 2 and row["weights"] == "ema"
        for f in ("config.json", "metrics.jsonl", "checkpoints/last.pt"):
            assert (folder / name / f).is_file(), (name, f)
        # the parameter count is the analytic check's for that point's overrides
        g, u = (int(x.split("=")[1]) for x in name.split(","))
        spec = af.load(DIGITS, {"growth": g, "units": u, "width": 8})
        assert row["parameters"] == af.check(spec).parameters.total
    assert rows["growth=2,units=3"]["parameters"] > rows["growth=1,units=3"]["parameters"]


def test_invalid_points_are_reported_up_front_and_skipped(grid, tmp_path):
    folder, r = grid
    rows = rows_of(folder)
    for name in INVALID:
        assert f"invalid, skipped: {name}:" in r.stderr
        assert rows[name]["status"] == "invalid" and "growth" in rows[name]["error"]
        assert not (folder / name).exists()
        assert table_cells(folder)[name]["status"].startswith("invalid: ")
    assert r.stderr.index("invalid, skipped") < r.stderr.index("[1/4]")  # before anything trains
    # a grid with no valid point trains nothing and fails
    none = sweep(DIGITS, "--set", "growth=0", "--set", "units=2,3", "--steps", "3", *TINY,
                 "--out", str(tmp_path / "none"))
    assert none.returncode == 1 and "no point of the grid is valid" in none.stderr
    assert not any(p.is_dir() for p in (tmp_path / "none").iterdir())


def test_table_and_plot_figures_are_what_eval_gives(grid, capsys):
    folder, _ = grid
    rows, cells = rows_of(folder), table_cells(folder)
    iw_col = "IW bits/dim (S = 2)"
    for name in ("growth=1,units=2", "growth=2,units=3"):
        code = main(["eval", str(folder / name), "--samples", "2", "--json"])
        assert code == 0
        ev = json.loads(capsys.readouterr().out)
        assert cells[name]["ELBO bits/dim"] == f"{ev['elbo_bpd']:.4f} ± {ev['elbo_se']:.4f}"
        assert cells[name][iw_col] == f"{ev['iw_bpd']:.4f} ± {ev['iw_se']:.4f}"
        for k in ("elbo_bpd", "elbo_se", "iw_bpd", "iw_se", "n"):
            assert rows[name][k] == pytest.approx(ev[k], rel=1e-12, abs=1e-12), k
        assert cells[name]["parameters"] == f"{rows[name]['parameters']:,}"
    # the plot draws those figures: bits/dim against growth (one line per units), against units and
    # against the parameter count
    from augflow_dsl.tools.sweep import SweepResult, plot_series
    series = plot_series(SweepResult.model_validate_json((folder / "results.json").read_text()))
    got = {(s.panel, s.label, s.metric, x): y for s in series for x, y in zip(s.x, s.y)}
    for name in VALID:
        row = rows[name]
        g, u = row["settings"]["growth"], row["settings"]["units"]
        for metric in ("iw", "elbo"):
            bpd = row[f"{metric}_bpd"]
            assert got[("growth", f"units={u}", metric, g)] == bpd
            assert got[("units", f"growth={g}", metric, u)] == bpd
            assert got[("parameters", f"units={u}", metric, row["parameters"])] == bpd
    assert len(got) == 3 * 2 * len(VALID)


def test_rerun_skips_the_finished_points(grid):
    folder, _ = grid
    watched = [folder / n / f for n in VALID for f in ("checkpoints/last.pt", "metrics.jsonl", "config.json")]
    before = {p: p.stat().st_mtime_ns for p in watched}
    rows = rows_of(folder)
    r = sweep(*GRID, "--out", str(folder))
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("done earlier, skipped") == len(VALID) and "training in" not in r.stderr
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    assert len((folder / "results.jsonl").read_text().splitlines()) == len(VALID)
    assert {k: v["elbo_bpd"] for k, v in rows_of(folder).items()} == {k: v["elbo_bpd"] for k, v in rows.items()}
    # --resume DIR is the same rerun, with the folder's own settings
    r = sweep("--resume", str(folder), "--json")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("done earlier, skipped") == len(VALID)


def test_a_changed_grid_or_spec_on_the_folder_is_refused(grid, tmp_path):
    folder, _ = grid
    before = (folder / "results.json").stat().st_mtime_ns
    grid_of = [DIGITS, "--set", "growth=0,1,2", "--set", "units=2,3", "--set", "width=8", "--eval-images", "16"]
    for args in ([DIGITS, "--set", "growth=1,2", "--set", "units=2,3", "--steps", "3", *TINY],  # another axis
                 [*grid_of, "--steps", "3", "--samples", "4"],                                   # another S
                 [*grid_of, "--steps", "4", "--samples", "2"],                                   # other steps
                 [*GRID, "--set", "train.lr=1e-3"]):                                             # a new override
        r = sweep(*args, "--out", str(folder))
        assert r.returncode == 1, (args, r.stderr)
        assert "holds another sweep" in r.stderr and "Traceback" not in r.stderr
    other = tmp_path / "other.flow"
    other.write_text(Path(DIGITS).read_text().replace("lr: 2e-3", "lr: 1e-3"))
    r = sweep(str(other), *GRID[1:], "--out", str(folder))
    assert r.returncode == 1 and "spec hash" in r.stderr
    assert (folder / "results.json").stat().st_mtime_ns == before


@pytest.mark.parametrize("args, needle", [
    (["--set", "growth"], "NAME=VALUE"),
    (["--set", "growth=1,,2"], "empty value"),
    (["--set", "growth=1,2", "--set", "growth=3"], "given twice"),
    (["--set", "growth=1,1"], "repeats 1"),
    (["--set", "2x=1,2"], "is not a name"),
    (["--steps", "0"], "whole number"),
])
def test_bad_input_is_a_usage_error(args, needle, tmp_path):
    r = sweep(DIGITS, *args, "--out", str(tmp_path / "s"))
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "s").exists()


def test_other_mistakes_are_messages(tmp_path):
    assert sweep(str(tmp_path / "missing.flow")).returncode == 2
    assert sweep().returncode == 2
    r = sweep("--resume", str(tmp_path))
    assert r.returncode == 1 and "not a sweep folder" in r.stderr
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("")
    r = sweep(*GRID, "--out", str(tmp_path / "x"))
    assert r.returncode == 1 and "not a sweep folder" in r.stderr


def test_sigint_stops_the_sweep_and_the_rerun_resumes_the_point(grid, tmp_path, monkeypatch):
    """SIGINT while the first point trains (at update 2, through the runtime's fault hook): the
    runtime checkpoints it and the sweep stops before the next point. SIGINT during its evaluation,
    on the rerun: the training is finished, the evaluation dropped. The third run only evaluates it
    (config.json, written when a run starts, is never rewritten), trains the second point, and the
    resumed point's figures equal those of the grid's point with its settings, never stopped."""
    import augflow_dsl.runtime.scoring as evaluate_mod
    from augflow_dsl.runtime.step import TrainHooks

    folder, _ = grid
    out = tmp_path / "stopped"
    args = [DIGITS, "--set", "growth=1,2", "--set", "units=2", "--steps", "3", *TINY, "--out", str(out)]
    first = out / "growth=1"

    def sigint_at_2(step: int):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with monkeypatch.context() as m:
        m.setattr(TrainHooks, "after_step", lambda self, step: sigint_at_2(step))
        r = sweep(*args)
    assert r.returncode == 0, r.stderr
    assert "stopped by SIGINT" in r.stderr and f"augflow-dsl sweep --resume {out}" in r.stderr
    result = json.loads((out / "results.json").read_text())
    assert result["stopped"] == "signal SIGINT"
    assert result["points"][0]["status"] == "pending" and result["points"][0]["steps"] == 2
    assert (first / "checkpoints" / "last.pt").is_file() and not (out / "growth=2").exists()
    assert not (out / "results.jsonl").exists()
    created = (first / "config.json").stat().st_mtime_ns

    real = evaluate_mod.evaluate

    def sigint_then_evaluate(*a, **k):
        if k.get("samples", 1) > 1:  # the sweep's evaluation (S = 2), not the runtime's in-training one
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(evaluate_mod, "evaluate", sigint_then_evaluate)
        r = sweep(*args)
    assert r.returncode == 0 and "stopped by SIGINT" in r.stderr, r.stderr
    assert "growth=1: 38,248 parameters, resuming in" in r.stderr and "stopped at step" not in r.stderr
    assert json.loads((out / "results.json").read_text())["points"][0]["steps"] == 3
    assert not (out / "results.jsonl").exists() and not (out / "growth=2").exists()

    r = sweep(*args)
    assert r.returncode == 0, r.stderr
    assert "(resumed from step 3)" in r.stderr and (first / "config.json").stat().st_mtime_ns == created
    rows = rows_of(out)
    assert [x["status"] for x in rows.values()] == ["done", "done"]
    assert rows["growth=1"]["resumed_from"] == 3 and rows["growth=2"]["resumed_from"] is None
    never_stopped = rows_of(folder)["growth=1,units=2"]
    for k in ("elbo_bpd", "elbo_se", "iw_bpd", "iw_se"):
        assert rows["growth=1"][k] == never_stopped[k], k
