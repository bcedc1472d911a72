"""Time, injected: SLA and scheduling code asks a clock, never ``datetime.now()``.

Production reads time from PostgreSQL (:class:`DatabaseClock`), so several instances agree on
"now" even if their hosts drift. Tests drive time: in-process with :class:`ManualClock`, and
across processes with ``DESK_CLOCK=driven``, which makes :class:`DatabaseClock` read the
``desk_clock`` row of the service's schema instead (an empty table means real time).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

import asyncpg

from shared.database import Connection


class Clock(Protocol):
    async def now(self, conn: Connection | None = None) -> datetime:
        """Now. Code holding a connection passes it: a clock that reads the database then uses
        it instead of taking a second one from the pool (which can run dry under load)."""
        ...


class SystemClock:
    """The host's clock, for tools and tests that do not need agreement between hosts."""

    async def now(self, conn: Connection | None = None) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock a test sets and advances by hand."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start

    async def now(self, conn: Connection | None = None) -> datetime:
        return self._now

    def advance(self, by: timedelta) -> datetime:
        self._now += by
        return self._now

    def set(self, to: datetime) -> None:
        self._now = to


class DatabaseClock:
    """PostgreSQL's ``clock_timestamp()``: one notion of now for every instance."""

    def __init__(self, pool: asyncpg.Pool, *, driven: bool = False) -> None:
        self.pool = pool
        self._sql = (
            "SELECT coalesce((SELECT value FROM desk_clock LIMIT 1), clock_timestamp())"
            if driven
            else "SELECT clock_timestamp()"
        )

    async def now(self, conn: Connection | None = None) -> datetime:
        value: datetime = await (conn or self.pool).fetchval(self._sql)
        return value
