"""examples/gpu_check.sh (issue 24, GPU readiness): the CPU quick mode prints every row, and a failing
or crashing check is a FAILED row that neither hides the others nor lets the script exit 0."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import load_example

ROOT = Path(__file__).resolve().parents[1]
ROWS = ["cuda tests", "bf16 train step", "channels_last", "ddp 1 rank", "torchrun train",
        "memory digits-small b8", "memory denseflow-74-10 b8", "throughput digits-small b8"]


def _module():
    return load_example("gpu_check")


def test_quick_cpu_run_prints_one_row_per_check():
    r = subprocess.run(["bash", str(ROOT / "examples" / "gpu_check.sh"), "--device", "cpu", "--quick"],
                       capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable},
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("| check (cpu") and lines[1] == "|---|---|---|---|"
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [row[0] for row in rows] == ROWS
    status = {row[0]: (row[1], row[2]) for row in rows}
    for name in ("bf16 train step", "channels_last", "ddp 1 rank", "memory digits-small b8",
                 "throughput digits-small b8"):
        assert status[name][0] == "ok", status[name]
    for name in ("cuda tests", "torchrun train", "memory denseflow-74-10 b8"):
        assert status[name] == ("skipped", status[name][1]) and "--quick" in status[name][1]
    assert "gloo" in status["ddp 1 rank"][1]
    ratio = float(status["memory digits-small b8"][1].rsplit("=", 1)[1])
    assert 0.85 <= ratio <= 1.15
    assert "Traceback" not in r.stderr


def test_a_failed_or_crashed_check_is_a_row_and_the_exit_is_1(monkeypatch, capsys):
    gc = _module()

    def fails(args):
        raise gc.Failed("ratio 2.0")

    def crashes(args):
        raise RuntimeError("CUDA error: out of memory\nmore")

    def skips(args):
        raise gc.Skip("no GPU")

    monkeypatch.setattr(gc, "checks", lambda device: [("a", fails), ("b", crashes), ("c", skips),
                                                       ("d", lambda args: "7 img/s")])
    assert gc.main(["--device", "cpu", "--json"]) == 1
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(r["check"], r["status"], r["figure"]) for r in rows] == [
        ("a", "FAILED", "ratio 2.0"), ("b", "FAILED", "RuntimeError: CUDA error: out of memory"),
        ("c", "skipped", "no GPU"), ("d", "ok", "7 img/s")]
    monkeypatch.setattr(gc, "checks", lambda device: [("c", skips), ("d", lambda args: "7 img/s")])
    assert gc.main(["--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "| d | ok | 7 img/s |" in table and "| c | skipped | no GPU |" in table
