"""Time, injected: SLA and scheduling code asks a clock, never ``datetime.now()``.

Production reads time from PostgreSQL (:class:`DatabaseClock`), so several instances agree on
"now" even if their hosts drift. Tests drive time with ``DESK_CLOCK=driven``, which makes
:class:`DatabaseClock` read the ``desk_clock`` row of the service's schema instead (an empty table
means real time), in-process and across processes alike.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import asyncpg

from shared.database import Connection, identifier


class Clock(Protocol):
    expression: str
    """The SQL that reads this clock inside a statement: one that stamps rows with now (a
    consumer's claim of its messages) then needs no round trip of its own to ask."""

    async def now(self, conn: Connection | None = None) -> datetime:
        """Now. Code holding a connection passes it: a clock that reads the database then uses
        it instead of taking a second one from the pool (which can run dry under load)."""
        ...


class DatabaseClock:
    """PostgreSQL's ``clock_timestamp()``: one notion of now for every instance."""

    def __init__(self, pool: asyncpg.Pool, *, driven: bool = False) -> None:
        self.pool = pool
        self.expression = (
            "coalesce((SELECT value FROM desk_clock LIMIT 1), clock_timestamp())"
            if driven
            else "clock_timestamp()"
        )
        self._sql = f"SELECT {self.expression}"

    async def now(self, conn: Connection | None = None) -> datetime:
        value: datetime = await (conn or self.pool).fetchval(self._sql)
        return value


async def service_now(conn: Connection, schema: str, *, driven: bool) -> datetime:
    """What a service's clock reads, asked from a tool's own connection (``desk``): its
    ``desk_clock`` row when driven and set, else PostgreSQL's clock."""
    table = f"{identifier(schema)}.desk_clock"
    if driven and await conn.fetchval("SELECT to_regclass($1)", table) is not None:
        value: datetime = await conn.fetchval(
            f"SELECT coalesce((SELECT value FROM {table} LIMIT 1), clock_timestamp())"
        )
        return value
    found: datetime = await conn.fetchval("SELECT clock_timestamp()")
    return found
