"""Sweeps and runs as scheduled jobs through submitit (issue 25).

* The SLURM script of a multi-GPU point, as submitit writes it (read back, never submitted): its
  ``#SBATCH`` lines (an array of the points, one task per GPU over the nodes, the time, memory, partition
  and extra lines) and its command.
* A 2-point sweep through submitit's LocalExecutor (real processes) on the 2-D toy: one point's job is
  preempted mid-run (SIGUSR2, SLURM's warning signal) and requeues itself through submitit's
  checkpointing hook; the other's is killed (SIGKILL, no checkpoint beyond the periodic one). Rerunning
  the sweep learns the states from the run folders and the jobs, resubmits the killed point alone (it
  resumes from last.pt), skips nothing twice and collects the table; each point's log holds every step
  once; ``sweep --status`` shows both done with their job ids.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from augflow_dsl.cli import main
from conftest import SPECS_DIR

pytest.importorskip("submitit")

TOY = str(SPECS_DIR / "toy-glow3.flow")
STEPS = 120
GRID = [TOY, "--set", "hidden=8,16", "--steps", str(STEPS), "--batch", "8", "--samples", "1", "--log-every", "1",
        "--checkpoint-every", "5", "--eval-every", "1000", "--eval-images", "16", "--threads", "1"]


def sweep(*args: str) -> subprocess.CompletedProcess:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["sweep", *args])
        except SystemExit as e:
            code = e.code
    return subprocess.CompletedProcess(["augflow-dsl", "sweep", *args], code, out.getvalue(), err.getvalue())


def test_slurm_script_of_a_multi_gpu_point(tmp_path):
    folder = tmp_path / "plan"
    r = sweep(TOY, "--set", "hidden=16,32,64", "--steps", "100", "--out", str(folder), "--launcher", "submitit",
              "--gpus-per-node", "4", "--nodes", "2", "--partition", "gpu", "--time", "1-12:00:00", "--mem", "64G",
              "--cpus-per-task", "8", "--array-parallelism", "2", "--slurm-extra", "account=flows",
              "--slurm-extra", "qos=high", "--dry-run")
    assert r.returncode == 0, r.stderr
    script = (folder / "jobs" / "dry-run.sbatch").read_text()
    sbatch = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)$", script, re.M))
    jobs = str(folder / "jobs")
    assert sbatch == {"account": "flows", "qos": "high", "array": "0-2%2", "cpus-per-task": "8",
                      "gpus-per-node": "4", "nodes": "2", "ntasks-per-node": "4", "mem": "64G", "partition": "gpu",
                      "time": "2160", "signal": "USR2@90", "job-name": "augflow-toy-glow3",
                      "output": f"{jobs}/%A_%a_0_log.out", "error": f"{jobs}/%A_%a_0_log.err",
                      "open-mode": "append", "wckey": "submitit"}
    command = script.split("# command\n", 1)[1].strip().splitlines()
    assert command[0] == "export SUBMITIT_EXECUTOR=slurm"
    assert command[1].startswith(f"srun --unbuffered --output {jobs}/%A_%a_%t_log.out ")
    assert command[1].endswith(f"-u -m submitit.core._submit {jobs}")
    assert not (folder / "jobs.json").exists()        # nothing submitted
    # one point: no array line
    r = sweep("--resume", str(folder), "--launcher", "submitit", "--dry-run", "--gpus-per-node", "1", "--nodes", "1")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("flags, message", [
    (["--launcher", "submitit", "--time", "25h"], "--time 25h"),
    (["--launcher", "submitit", "--mem", "lots"], "--mem lots"),
    (["--partition", "gpu"], "need --launcher submitit"),
    (["--launcher", "submitit-local", "--nodes", "2"], "--nodes must be 1"),
    (["--launcher", "submitit", "--slurm-extra", "novalue"], "KEY=VALUE"),
])
def test_bad_launcher_flags_are_usage_errors(tmp_path, flags, message):
    r = sweep(TOY, "--steps", "2", "--out", str(tmp_path / "bad"), *flags)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def _wait_for(cond, what: str, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.02)


def _attempts(run: Path) -> list[dict]:
    try:
        return json.loads((run / "job.json").read_text())
    except (OSError, ValueError):
        return []


def test_local_jobs_preempted_killed_and_resubmitted(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    folder = tmp_path / "sw"
    r = sweep(*GRID, "--out", str(folder), "--launcher", "submitit-local", "--no-wait")
    assert r.returncode == 0, r.stderr
    assert "2 point(s) queued or running" in r.stderr
    jobs = json.loads((folder / "jobs.json").read_text())["points"]
    first = {name: rec[0]["job_id"] for name, rec in jobs.items()}
    preempted, killed = folder / "hidden=8", folder / "hidden=16"

    todo = {preempted: signal.SIGUSR2, killed: signal.SIGKILL}

    def signal_those_past_their_first_checkpoint() -> bool:  # each as soon as it is (the jobs start apart)
        for run, sig in list(todo.items()):
            if (run / "checkpoints" / "last.pt").is_file() and _attempts(run):
                os.kill(_attempts(run)[0]["pid"], sig)
                del todo[run]
        return not todo

    _wait_for(signal_those_past_their_first_checkpoint, "both jobs past step 5")
    _wait_for(lambda: len(_attempts(preempted)) == 2, "the requeued attempt")

    r = sweep("--resume", str(folder))  # the stored launcher; waits (submitit-local)
    assert r.returncode == 0, r.stderr
    assert "hidden=16: resubmitted (resumes from last.pt)" in r.stderr
    jobs = json.loads((folder / "jobs.json").read_text())["points"]
    assert [j["job_id"] for j in jobs["hidden=8"]] == [first["hidden=8"]]      # requeued by submitit itself
    assert len(jobs["hidden=16"]) == 2 and jobs["hidden=16"][0]["job_id"] == first["hidden=16"]
    a8, a16 = _attempts(preempted), _attempts(killed)
    assert [a["attempt"] for a in a8] == [1, 2] and {a["job_id"] for a in a8} == {first["hidden=8"]}
    assert [a["job_id"] for a in a16] == [first["hidden=16"], jobs["hidden=16"][1]["job_id"]]

    for run in (preempted, killed):
        steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()
                 if "split" not in json.loads(x)]
        assert steps == list(range(1, STEPS + 1)), run.name   # every step once: resumed, not restarted
        assert (run / "tb").is_dir() and json.loads((run / "point.json").read_text())["status"] == "done"
    log = (folder / "jobs" / f"{first['hidden=8']}_0_log.out").read_text()
    assert "stopped by SIGUSR2" in log and "requeuing" in log
    results = json.loads((folder / "results.json").read_text())["points"]
    assert [(p["name"], p["status"], p["steps"]) for p in results] == [("hidden=8", "done", STEPS),
                                                                        ("hidden=16", "done", STEPS)]
    assert all(p["elbo_bpd"] > 0 for p in results)
    assert "| 8 |" in (folder / "table.md").read_text() and (folder / "plot.png").is_file()
    finished = [json.loads(x)["name"] for x in (folder / "results.jsonl").read_text().splitlines()]
    assert sorted(finished) == ["hidden=16", "hidden=8"]

    r = sweep("--resume", str(folder))  # nothing left to do: no new job
    assert r.returncode == 0 and "submitted" not in r.stderr, r.stderr
    r = sweep("--status", str(folder))
    assert r.returncode == 0, r.stderr
    lines = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:]] for line in r.stdout.splitlines()
             if line.startswith("│")}
    assert lines["hidden=8"][:3] == [first["hidden=8"], "done", str(STEPS)]
    assert lines["hidden=16"][:3] == [jobs["hidden=16"][1]["job_id"], "done", str(STEPS)]
