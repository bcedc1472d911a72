"""Retry delays: doubling, capped, and with jitter inside half-to-all of the delay."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.scheduling import backoff

pytestmark = pytest.mark.unit

FIRST, CEILING = timedelta(seconds=1), timedelta(seconds=10)


def test_backoff_doubles_up_to_the_ceiling() -> None:
    delays = [backoff(n, FIRST, CEILING) for n in range(1, 7)]
    assert [d.total_seconds() for d in delays] == [1, 2, 4, 8, 10, 10]


def test_jitter_stays_between_half_and_all_of_the_delay() -> None:
    drawn = {backoff(3, FIRST, CEILING, jitter=True) for _ in range(200)}
    assert all(timedelta(seconds=2) <= d <= timedelta(seconds=4) for d in drawn)
    assert len(drawn) > 1


@pytest.mark.parametrize("attempts", [47, 48, 60, 1_000, 10**9])
def test_any_count_of_attempts_waits_the_ceiling(attempts: int) -> None:
    """An outage of hours counts attempts past what ``first * 2 ** n`` can hold."""
    assert backoff(attempts, FIRST, CEILING) == CEILING
    assert backoff(attempts, timedelta(microseconds=1), timedelta(days=1)) == timedelta(days=1)
    assert timedelta(days=0.5) <= backoff(attempts, FIRST, timedelta(days=1), jitter=True)


def test_no_first_delay_stays_none() -> None:
    assert backoff(10**6, timedelta(0), CEILING) == timedelta(0)
