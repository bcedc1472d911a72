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


SHANGHAI = ZoneInfo("Asia/Shanghai")
CHINA = CalendarPolicy(
    time_zone="Asia/Shanghai",
    hours={d: ["09:00-12:00", "13:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
    holidays=[date(2026, 10, 1), date(2026, 10, 2)],  # Thursday, Friday
    make_up_days=[date(2026, 10, 10)],  # 调休: Saturday is a working day
    half_days={date(2026, 9, 30): ["09:00-12:00"]},  # the eve of the holiday: mornings only
)


def shanghai(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=SHANGHAI)


def test_a_make_up_saturday_is_a_working_day_with_a_normal_days_hours() -> None:
    calendar = BusinessCalendar(CHINA)
    friday_evening = shanghai(10, 9, 17, 50)
    # 10 minutes on Friday, then Saturday 2026-10-10 (调休) from 09:00: due at 09:20 that day.
    assert calendar.add(friday_evening, 30 * 60) == shanghai(10, 10, 9, 20).astimezone(UTC)
    # Saturday counts its lunch break out like any weekday: 8 hours from 09:00 to 18:00.
    assert calendar.seconds_between(shanghai(10, 10), shanghai(10, 11)) == 8 * 3600
    # An ordinary Saturday counts nothing.
    assert calendar.seconds_between(shanghai(10, 17), shanghai(10, 18)) == 0


def test_a_half_day_counts_its_own_hours_and_the_holidays_after_it_nothing() -> None:
    calendar = BusinessCalendar(CHINA)
    wednesday = shanghai(9, 30)
    assert calendar.seconds_between(wednesday, shanghai(10, 1)) == 3 * 3600
    # 11:30 on the half day + 1 hour: 30 minutes left that morning, the rest after the holidays
    # (Thursday and Friday off, the weekend, Monday 09:00): Monday 09:30.
    assert calendar.add(shanghai(9, 30, 11, 30), 3600) == shanghai(10, 5, 9, 30).astimezone(UTC)
    # Across the whole stretch: 3 h on the half day, 0 on the holidays and the weekend.
    assert calendar.seconds_between(wednesday, shanghai(10, 5)) == 3 * 3600


@pytest.mark.parametrize("hours", [0.25, 1, 3, 7.5, 8, 9, 30])
def test_adding_and_counting_agree_around_special_days(hours: float) -> None:
    calendar = BusinessCalendar(CHINA)
    for start in (shanghai(9, 29, 17), shanghai(9, 30, 10), shanghai(10, 9, 16)):
        end = calendar.add(start, hours * 3600)
        assert calendar.seconds_between(start, end) == pytest.approx(hours * 3600)


def test_special_days_are_validated() -> None:
    with pytest.raises(ValueError, match="not several"):
        CalendarPolicy(
            hours={"mon": ["09:00-18:00"]},
            holidays=[date(2026, 10, 10)],
            make_up_days=[date(2026, 10, 10)],
        )
    with pytest.raises(ValueError, match="forward interval"):
        CalendarPolicy(
            hours={"mon": ["09:00-18:00"]}, half_days={date(2026, 9, 30): ["12:00-09:00"]}
        )


def test_a_calendar_without_special_days_keeps_its_version() -> None:
    plain = CalendarPolicy(hours={"mon": ["09:00-18:00"]}, holidays=[date(2026, 10, 1)])
    assert plain.version == "cal:" + _old_version(plain)
    special = CalendarPolicy(
        hours={"mon": ["09:00-18:00"]},
        holidays=[date(2026, 10, 1)],
        make_up_days=[date(2026, 10, 10)],
    )
    assert special.version != plain.version


def _old_version(calendar: CalendarPolicy) -> str:
    """How versions were computed before make-up and half days existed."""
    import hashlib
    import json

    fields = {"time_zone", "always", "hours", "holidays"}
    text = json.dumps(calendar.model_dump(mode="json", include=fields), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@pytest.mark.parametrize(
    ("zone", "night"),
    [("Europe/Berlin", date(2026, 3, 29)), ("America/New_York", date(2026, 3, 8))],
)
def test_a_boundary_in_the_hour_daylight_saving_skips_counts_no_time_twice(
    zone: str, night: date
) -> None:
    """A nightly maintenance window, 02:30-03:00, and on the spring-forward night 02:30 does not
    exist: it read as after the change, later in UTC than 03:00, and the two intervals overlapped
    by half an hour — counted twice, deadlines came early, ``add`` went backwards."""
    every_day = ["00:00-02:30", "03:00-24:00"]
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    calendar = BusinessCalendar(
        CalendarPolicy(time_zone=zone, hours=dict.fromkeys(days, every_day))
    )
    midnight = datetime.combine(night, datetime.min.time(), tzinfo=ZoneInfo(zone))
    next_midnight = datetime.combine(night + timedelta(days=1), datetime.min.time(), ZoneInfo(zone))
    # The day the clocks go forward (the same zone subtracts as wall times: in UTC).
    assert next_midnight.astimezone(UTC) - midnight.astimezone(UTC) == timedelta(hours=23)
    # The whole of that 23-hour day is working time: the window fell into the skipped hour.
    assert calendar.seconds_between(midnight, next_midnight) == 23 * 3600
    ends = [calendar.add(midnight, s) for s in range(0, 12 * 3600, 300)]
    assert ends == sorted(ends), "adding more never ends earlier"
    for seconds in range(300, 12 * 3600, 900):
        end = calendar.add(midnight, seconds)
        assert calendar.seconds_between(midnight, end) == pytest.approx(seconds)
