"""bench.e2e runs the whole system and reports figures that hang together (not their values:
speed is the benchmark's to measure, on a quiet machine)."""

from __future__ import annotations

import pytest

from services import service_names
from tests.support.benchmarks import bench

STAGES = ["recorded", "dispatched", "clocks_started", "acknowledged"]
REQUESTS = 12


@pytest.mark.slow
def test_a_tiny_run_reaches_every_stage_and_prices_every_process() -> None:
    figures = bench(
        "e2e", "--requests", str(REQUESTS), "--warmup", "4", "--rate", "20", "--timeout", "90"
    )

    ceiling = figures["ceilings"]["broker_records_per_s"]
    assert ceiling > 0
    assert figures["ceilings"]["postgres_rows_per_s"] > 0
    assert list(figures["burst"]) == STAGES
    for stage in figures["burst"].values():
        assert stage["reached"] == REQUESTS
        assert stage["per_s"] > 0
        assert stage["of_broker_ceiling_pct"] == round(100 * stage["per_s"] / ceiling, 2)

    steady = figures["steady"]
    assert [steady[s]["reached"] for s in STAGES] == [REQUESTS] * len(STAGES)
    # Each stage is caused by the one before it (the acknowledgement by intake's events).
    medians = [steady[s]["p50_ms"] for s in STAGES[:3]]
    assert 0 < medians[0] <= medians[1] <= medians[2]
    assert steady["acknowledged"]["p50_ms"] >= medians[0]
    for stage in STAGES:
        assert steady[stage]["p50_ms"] <= steady[stage]["p99_ms"]

    for phase in ("burst", "steady"):
        cpu = figures["cpu_ms_per_ticket"][phase]
        parts = {*service_names(), "postgres", "broker", "desk_up", "receivers", "bench"}
        assert set(cpu) == parts | {"total"}
        assert all(cpu[p] >= 0 for p in parts)
        assert cpu["total"] == pytest.approx(sum(cpu[p] for p in parts), abs=0.01)
        assert cpu["total"] > 0


@pytest.mark.slow
def test_a_tiny_soak_samples_every_process_and_every_window() -> None:
    figures = bench(
        "e2e",
        "--soak",
        "--requests",
        "30",
        "--rate",
        "10",
        "--warmup",
        "4",
        "--window",
        "1",
        "--timeout",
        "90",
    )

    assert figures["mode"] == "soak"
    processes = {*service_names(), "postgres", "broker", "desk_up", "receivers", "bench"}
    assert set(figures["rss_mb"]) == processes
    for memory in figures["rss_mb"].values():
        assert 0 < memory["start"] <= memory["max"]
        assert 0 < memory["end"] <= memory["max"]
    windows = figures["windows"]
    assert len(windows) >= 2  # 30 requests at 10/s: three seconds of publishing
    assert sum(w["published"] for w in windows) == 30
    assert [w["from_s"] for w in windows] == sorted(w["from_s"] for w in windows)
    assert set(figures["most_behind"]) == set(service_names())
    assert all(records >= 0 for records in figures["most_behind"].values())
    for window in windows:
        assert set(window["rss_mb"]) == set(service_names())
        assert set(window["behind"]) == set(service_names())
        assert all(0 <= n <= figures["most_behind"][s] for s, n in window["behind"].items())
        for stage in STAGES:
            p50, p99 = window[f"{stage}_ms"]
            assert 0 < p50 <= p99
