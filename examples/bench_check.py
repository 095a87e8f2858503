"""How long `check` takes on the largest spec, DenseFlow-74-10 (74 glow-like modules, 8 cross-unit
couplings, a variational dequantizer: 412 graph nodes).

(a) `augflow-dsl check specs/denseflow-74-10.flow` as a subprocess, interpreter start-up and imports
    included: the median of 5 runs; target 1 s.
(b) in-process parse + graph + checks (load, build, audit and cost report) after one warm-up run:
    the median of 5; target 0.3 s.

    .venv/bin/python examples/bench_check.py [SPEC]
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPEATS = 5
TARGET_CLI_S = 1.0
TARGET_INPROCESS_S = 0.3


def _cli_command(spec: str) -> list[str]:
    script = Path(sys.executable).parent / "augflow-dsl"
    if script.exists():
        return [str(script), "check", spec]
    return [sys.executable, "-m", "augflow_dsl.cli", "check", spec]


def bench_cli(spec: str) -> list[float]:
    cmd = _cli_command(spec)
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"check failed ({proc.returncode}):\n{proc.stderr}")
    return times


def bench_in_process(spec: str) -> tuple[list[float], object]:
    from augflow_dsl.graph.builder import build
    from augflow_dsl.graph.check import check_graph
    from augflow_dsl.language.load import load

    def once():
        s = load(ROOT / spec)          # parse + evaluate
        g, diag = build(s)             # graph
        return check_graph(s, g, diag)  # audit, dims, cost

    once()  # warm-up: the grammar is compiled once per process
    times, report = [], None
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        report = once()
        times.append(time.perf_counter() - t0)
    return times, report


def _line(what: str, times: list[float], target: float) -> str:
    med = statistics.median(times)
    verdict = "ok" if med <= target else "OVER TARGET"
    runs = ", ".join(f"{t:.3f}" for t in times)
    return f"{what:<46} median {med:6.3f} s   target {target:.1f} s   {verdict}   (runs: {runs})"


def main(argv: list[str]) -> int:
    spec = argv[1] if len(argv) > 1 else "specs/denseflow-74-10.flow"
    cli = bench_cli(spec)
    inproc, report = bench_in_process(spec)
    print(f"spec: {spec}  ({len(report.nodes)} nodes, {report.parameters.total:,} parameters, "
          f"valid={report.valid}); python {sys.version.split()[0]}")
    print(_line("(a) augflow-dsl check, subprocess, start-up", cli, TARGET_CLI_S))
    print(_line("(b) in-process parse + graph + checks", inproc, TARGET_INPROCESS_S))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
