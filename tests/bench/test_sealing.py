"""bench.sealing: intake's batch path in clear and sealed, alternated in one process on the real
(embedded) PostgreSQL; every receipt is as its batch's variant records it (the run checks it)."""

from __future__ import annotations

import pytest

from tests.support.benchmarks import bench


@pytest.mark.slow
def test_a_small_run_prices_sealing_batch_against_batch() -> None:
    figures = bench("sealing", "--requests", "1200", "--batch", "50", timeout=300)

    assert (figures["requests"], figures["batch"]) == (1200, 50)
    assert figures["pairs_counted"] == 11  # 12 pairs of 50, the first tenth (one) not counted
    assert figures["clear_us"] > 0 and figures["sealed_us"] > 0
    low, high = figures["pair_pct_quartiles"]
    assert low <= figures["pair_pct_median"] <= high
    # Both variants recorded tickets (a few demo requests are refused, not recorded).
    assert min(figures["receipts"].values()) > 500
