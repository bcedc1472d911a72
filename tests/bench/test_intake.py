"""bench.intake's comparison of intake with and without sealing: every run measured what it
says (clear or sealed), and the figure is computed from the runs it prints."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_compare_alternates_clear_and_sealed_runs_and_prices_sealing_from_them() -> None:
    command = [sys.executable, "-m", "bench.intake", "--requests", "1500", "--compare", "1"]
    command += ["--steady-rate", "20", "--steady-seconds", "1"]
    run = subprocess.run(
        command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])

    cpu = figures["service_cpu_ms_per_request"]
    assert [len(cpu["clear"]), len(cpu["sealed"])] == [1, 1]
    assert all(ms > 0 for runs in cpu.values() for ms in runs)
    median = figures["median_service_cpu_ms_per_request"]
    assert median == {mode: statistics.median(runs) for mode, runs in cpu.items()}
    expected = round(100 * (median["sealed"] / median["clear"] - 1), 1)
    assert figures["sealing_cpu_pct"] == expected
    assert figures["pair_sealing_cpu_pct"] == [expected]
    assert all(rate > 0 for runs in figures["requests_per_s"].values() for rate in runs)
