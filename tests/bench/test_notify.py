"""bench.notify: every notice arrives once; side by side, both variants measured what they say
(sealed or clear) and the figure is computed from the rounds it prints."""

from __future__ import annotations

import pytest

from tests.support.benchmarks import bench


@pytest.mark.slow
def test_every_notice_of_a_run_arrives_once() -> None:
    figures = bench("notify", "--tickets", "200")

    assert (figures["emails_received"], figures["webhooks_received"]) == (200, 200)
    assert figures["webhooks_repeated"] == 0
    assert figures["personal_fields"] == "sealed"
    assert figures["cpu_ms_per_ticket"]["service"] > 0


@pytest.mark.slow
def test_compare_runs_sealed_and_clear_side_by_side_and_prices_sealing_from_the_rounds() -> None:
    figures = bench("notify", "--tickets", "1000", "--compare", "2")

    assert figures["notices_sealed_share"] == {"sealed": 1.0, "clear": 0.0}
    cpu = figures["service_cpu_ms_per_ticket"]
    assert [len(cpu["sealed"]), len(cpu["clear"])] == [2, 2]
    assert figures["tickets_a_round"] == 500
    assert all(ms > 0 for runs in cpu.values() for ms in runs)
    assert figures["sealing_cpu_pct"] == pytest.approx(
        100 * (sum(cpu["sealed"]) / sum(cpu["clear"]) - 1), abs=0.5
    )
    rounds = [100 * (s / c - 1) for c, s in zip(cpu["clear"], cpu["sealed"], strict=True)]
    assert figures["round_sealing_cpu_pct"] == pytest.approx(rounds, abs=0.5)
