"""bench.intake's comparison of intake with and without sealing: both variants measured what
they say (clear or sealed), side by side, and the figure is computed from the rounds it prints."""

from __future__ import annotations

import pytest

from tests.support.benchmarks import bench


@pytest.mark.slow
def test_compare_runs_clear_and_sealed_side_by_side_and_prices_sealing_from_the_rounds() -> None:
    figures = bench("intake", "--requests", "3000", "--compare", "2")

    assert figures["receipts_sealed_share"] == {"sealed": 1.0, "clear": 0.0}
    cpu = figures["service_cpu_ms_per_request"]
    assert [len(cpu["clear"]), len(cpu["sealed"])] == [2, 2]
    assert figures["requests_a_round"] == 1500
    assert all(ms > 0 for runs in cpu.values() for ms in runs)
    mean = figures["mean_service_cpu_ms_per_request"]
    assert mean == pytest.approx({mode: sum(runs) / 2 for mode, runs in cpu.items()}, abs=1e-3)
    assert figures["sealing_cpu_pct"] == pytest.approx(
        100 * (sum(cpu["sealed"]) / sum(cpu["clear"]) - 1), abs=0.5
    )
    rounds = [100 * (s / c - 1) for c, s in zip(cpu["clear"], cpu["sealed"], strict=True)]
    assert figures["round_sealing_cpu_pct"] == pytest.approx(rounds, abs=0.5)
