"""bench.intake's comparison of intake with and without sealing: every run measured what it
says (clear or sealed), and the figure is computed from the runs it prints."""

from __future__ import annotations

import statistics

import pytest

from tests.support.benchmarks import bench


@pytest.mark.slow
def test_compare_alternates_clear_and_sealed_runs_and_prices_sealing_from_them() -> None:
    figures = bench(
        "intake",
        "--requests",
        "1500",
        "--compare",
        "1",
        "--steady-rate",
        "20",
        "--steady-seconds",
        "1",
    )

    cpu = figures["service_cpu_ms_per_request"]
    assert [len(cpu["clear"]), len(cpu["sealed"])] == [1, 1]
    assert all(ms > 0 for runs in cpu.values() for ms in runs)
    median = figures["median_service_cpu_ms_per_request"]
    assert median == {mode: statistics.median(runs) for mode, runs in cpu.items()}
    expected = round(100 * (median["sealed"] / median["clear"] - 1), 1)
    assert figures["sealing_cpu_pct"] == expected
    assert figures["pair_sealing_cpu_pct"] == [expected]
    assert all(rate > 0 for runs in figures["requests_per_s"].values() for rate in runs)
