"""Business time: how much of an interval a calendar counts, and when a span of it ends.

An SLA target is an amount of *business* time: under a Mon–Fri 09:00–18:00 calendar a request
received on Friday at 17:50 with a 30-minute target is due on Monday at 09:20 (Tuesday, if Monday
is a holiday; Saturday at 09:20, if that Saturday is a make-up working day). Working intervals
are wall-clock times in the calendar's zone, so daylight-saving changes move them with the local
clock. Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.policy.sla import WEEKDAYS, CalendarPolicy, interval_minutes

_SEARCH_DAYS = 3 * 366
"""A target that cannot be reached within three years of working days is a policy mistake."""
_REMEMBERED = 8192


class BusinessCalendar:
    def __init__(self, policy: CalendarPolicy) -> None:
        self.always = policy.always
        self.zone = ZoneInfo(policy.time_zone)
        self.holidays = frozenset(policy.holidays)
        self.hours: dict[int, list[tuple[int, int]]] = {
            WEEKDAYS.index(day): [interval_minutes(i) for i in intervals]
            for day, intervals in policy.hours.items()
        }
        workday = [interval_minutes(i) for i in policy.workday]
        self.dates: dict[date, list[tuple[int, int]]] = {
            **{day: workday for day in policy.make_up_days},
            **{
                day: [interval_minutes(i) for i in intervals]
                for day, intervals in policy.half_days.items()
            },
        }
        """Dates whose hours are not their weekday's: make-up working days and half days."""
        self._days: dict[date, list[tuple[datetime, datetime]]] = {}
        self._added: dict[tuple[datetime, float], datetime] = {}
        """Recent answers of :meth:`add`: a clock asks for its deadline and marks repeatedly."""

    def seconds_between(self, start: datetime, end: datetime) -> float:
        """Business seconds in [start, end) (zero if end is not after start)."""
        if end <= start:
            return 0.0
        if self.always:
            return (end - start).total_seconds()
        total = 0.0
        for opens, closes in self._intervals(start):
            if opens >= end:
                break
            total += (min(closes, end) - max(opens, start)).total_seconds()
        return total

    def add(self, start: datetime, seconds: float) -> datetime:
        """The moment ``seconds`` of business time after ``start`` have passed."""
        if seconds <= 0:
            return start
        if self.always:
            return start + timedelta(seconds=seconds)
        key = (start, seconds)
        found = self._added.get(key)
        if found is None:
            if len(self._added) >= _REMEMBERED:
                self._added.clear()
            found = self._added[key] = self._add(start, seconds)
        return found

    def _add(self, start: datetime, seconds: float) -> datetime:
        left = seconds
        for opens, closes in self._intervals(start):
            begin = max(opens, start)
            available = (closes - begin).total_seconds()
            if left <= available:
                return (begin + timedelta(seconds=left)).astimezone(UTC)
            left -= available
        raise ValueError(f"no working time within {_SEARCH_DAYS} days of {start.isoformat()}")

    def _intervals(self, start: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Working intervals (UTC, in order, none overlapping) that end after ``start``.

        A boundary in the hour a daylight-saving change skips (02:30 on a spring-forward night
        in Berlin) reads as after the change — later in UTC than the next boundary, 03:00 — so
        two intervals would overlap: counted twice, a deadline came early and ``add`` went
        backwards. Each interval starts where the last one ended, at the latest."""
        day = start.astimezone(self.zone).date() - timedelta(days=1)
        reached: datetime | None = None
        for _ in range(_SEARCH_DAYS):
            for opens, closes in self._working(day):
                begins = opens if reached is None else max(opens, reached)
                if closes <= begins:
                    continue
                reached = closes
                if closes > start:
                    yield begins, closes
            day += timedelta(days=1)

    def _working(self, day: date) -> list[tuple[datetime, datetime]]:
        """The day's working intervals in UTC, kept: clocks ask about the same days again and
        again, and zone conversions are the slow part."""
        found = self._days.get(day)
        if found is None:
            found = self._days[day] = [
                (self._at(day, opens), self._at(day, closes))
                for opens, closes in self._hours_on(day)
            ]
        return found

    def _hours_on(self, day: date) -> list[tuple[int, int]]:
        special = self.dates.get(day)
        if special is not None:
            return special
        if day in self.holidays:
            return []
        return self.hours.get(day.weekday(), [])

    def _at(self, day: date, minutes: int) -> datetime:
        if minutes == 24 * 60:
            day, minutes = day + timedelta(days=1), 0
        local = datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=self.zone)
        return local.astimezone(UTC)
