"""Durations in configuration accept any unit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.durations import format_duration, parse_duration

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("30m", timedelta(minutes=30)),
        ("4h", timedelta(hours=4)),
        ("1h30m", timedelta(minutes=90)),
        ("1h 30m", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("250ms", timedelta(milliseconds=250)),
        ("1.5h", timedelta(minutes=90)),
        ("PT30M", timedelta(minutes=30)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("90", timedelta(seconds=90)),
        (120, timedelta(minutes=2)),
        (timedelta(hours=1), timedelta(hours=1)),
    ],
)
def test_durations_parse(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["", "soon", "30 minutes", "5x", "1h30", True, None, "P"])
def test_bad_durations_say_how_to_write_one(bad: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is checked below for text
        parse_duration(bad)


@pytest.mark.parametrize("huge", ["99999999999999999999d", "P99999999999999999999D", 1e300])
def test_a_duration_past_what_a_clock_counts_is_an_error_not_an_overflow(huge: object) -> None:
    with pytest.raises(ValueError, match="longer than any clock can count"):
        parse_duration(huge)


def test_the_error_names_the_accepted_forms() -> None:
    with pytest.raises(ValueError, match=r"e\.g\. 45s, 30m, 4h"):
        parse_duration("soon")


@given(st.integers(min_value=0, max_value=10**9))
def test_format_and_parse_round_trip(milliseconds: int) -> None:
    value = timedelta(milliseconds=milliseconds)
    assert parse_duration(format_duration(value)) == value
