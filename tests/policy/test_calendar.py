"""Business time under working hours, holidays, time zones and round-the-clock calendars."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.policy.calendar import BusinessCalendar
from services.policy.sla import CalendarPolicy

pytestmark = pytest.mark.unit

BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = CalendarPolicy(
    time_zone="Europe/Berlin",
    hours={
        "mon": ["09:00-18:00"],
        "tue": ["09:00-18:00"],
        "wed": ["09:00-18:00"],
        "thu": ["09:00-18:00"],
        "fri": ["09:00-18:00"],
    },
    holidays=[date(2026, 11, 23)],  # a Monday
)


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


def test_friday_evening_with_a_monday_holiday_is_due_on_tuesday() -> None:
    calendar = BusinessCalendar(OFFICE)
    friday = local(2026, 11, 20, 17, 50)
    assert calendar.add(friday, 30 * 60) == local(2026, 11, 24, 9, 20).astimezone(UTC)
    assert calendar.seconds_between(friday, local(2026, 11, 24, 9, 0)) == 10 * 60
    assert calendar.seconds_between(friday, local(2026, 11, 24, 9, 20)) == 30 * 60


def test_time_outside_working_hours_counts_nothing() -> None:
    calendar = BusinessCalendar(OFFICE)
    assert calendar.seconds_between(local(2026, 11, 21, 8), local(2026, 11, 22, 20)) == 0
    assert calendar.add(local(2026, 11, 21, 3), 60) == local(2026, 11, 24, 9, 1).astimezone(UTC)


def test_split_days_and_round_trip() -> None:
    calendar = BusinessCalendar(
        CalendarPolicy(
            time_zone="Asia/Shanghai",
            hours={"mon": ["09:00-12:00", "13:00-18:00"], "sat": ["10:00-24:00"]},
        )
    )
    start = datetime(2026, 11, 23, 11, 0, tzinfo=ZoneInfo("Asia/Shanghai"))  # Monday
    for hours in (0.5, 1, 2.5, 8, 20, 40):
        end = calendar.add(start, hours * 3600)
        assert calendar.seconds_between(start, end) == pytest.approx(hours * 3600)
    assert calendar.add(start, 7200) == start + timedelta(hours=3)  # skips the lunch hour


def test_working_hours_follow_daylight_saving_time() -> None:
    calendar = BusinessCalendar(OFFICE)
    # Berlin leaves summer time on 2026-10-25: 09:00 local is 07:00 UTC before, 08:00 after.
    assert calendar.add(local(2026, 10, 23, 18), 60) == datetime(2026, 10, 26, 8, 1, tzinfo=UTC)


def test_always_counts_every_second() -> None:
    calendar = BusinessCalendar(CalendarPolicy(always=True))
    start = datetime(2026, 11, 21, 23, 55, tzinfo=UTC)
    assert calendar.add(start, 600) == start + timedelta(minutes=10)
    assert calendar.seconds_between(start, start + timedelta(days=2)) == 2 * 86400


def test_a_calendar_without_working_time_is_refused() -> None:
    with pytest.raises(ValueError, match="working hours"):
        CalendarPolicy(hours={})
    with pytest.raises(ValueError, match="forward interval"):
        CalendarPolicy(hours={"mon": ["18:00-09:00"]})
    with pytest.raises(ValueError, match="time zone"):
        CalendarPolicy(time_zone="Mars/Olympus", always=True)
