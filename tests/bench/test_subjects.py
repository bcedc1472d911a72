"""bench.subjects: what intake's key store costs its process a request, measured on the real
(embedded) PostgreSQL; customers met again are found, never made again (the run checks it)."""

from __future__ import annotations

import pytest

from tests.support.benchmarks import bench


@pytest.mark.slow
def test_a_small_run_prices_meeting_customers_and_sealing_their_texts() -> None:
    figures = bench("subjects", "--requests", "600", "--batch", "50", timeout=300)

    assert (figures["requests"], figures["batch"]) == (600, 50)
    # The demo draws customers from 9,000: in 600 requests most are met for the first time.
    assert 0.5 < figures["new_subject_share"] <= 1
    assert all(figures[f] > 0 for f in ("first_meeting_us", "known_us", "sealing_us"))
