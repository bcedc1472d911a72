"""The token bucket per channel client, on a clock the test moves."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.console.allowance import Allowance, retry_after

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_the_limit_passes_then_one_per_share_of_the_window() -> None:
    clock = Clock()
    allowance = Allowance(3, timedelta(minutes=1), clock)
    assert [allowance.take("channel:a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert allowance.take("channel:a") == pytest.approx(20.0)
    assert allowance.take("channel:b") == 0.0, "each client has its own"
    clock.now += 19.0
    assert allowance.take("channel:a") == pytest.approx(1.0)
    clock.now += 1.0
    assert allowance.take("channel:a") == 0.0
    assert allowance.take("channel:a") == pytest.approx(20.0)


def test_a_client_idle_for_a_window_starts_full_and_is_forgotten_meanwhile() -> None:
    clock = Clock()
    allowance = Allowance(2, timedelta(seconds=1), clock)
    for n in range(1000):
        allowance.take(f"channel:{n}")
    clock.now += 1.0
    assert [allowance.take("channel:0") for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]
    assert allowance.counted == 1


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert [retry_after(s) for s in (0.01, 1.0, 1.2, 19.9)] == ["1", "1", "2", "20"]
