"""Waiting for work that comes due: retry backoff, and sleeping until the next due row.

Consumers retry a failing message, notify retries a notice, sla and notify poll tables of due
rows; they all wait the same way, so the waiting lives here once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import asyncpg

from shared.clock import Clock
from shared.database import Connection


def backoff(
    attempts: int, first: timedelta, ceiling: timedelta, *, jitter: bool = False
) -> timedelta:
    """Delay before attempt ``attempts + 1``: doubling from ``first``, capped at ``ceiling``.

    With ``jitter`` it is drawn between half and all of that, so many retries that failed
    together do not all come back together. Doubled step by step, never as ``first * 2 ** n``:
    counts of attempts have no bound (an outage of hours), and a timedelta cannot hold
    ``2 ** 47`` seconds — the supervisor that asked would die of the overflow.
    """
    delay = first
    for _ in range(max(0, attempts - 1)):
        if delay >= ceiling or delay <= timedelta(0):
            break
        delay *= 2
    delay = min(delay, ceiling)
    return delay * random.uniform(0.5, 1.0) if jitter else delay


async def sleep_until_due(
    pool: asyncpg.Pool,
    clock: Clock,
    next_due: Callable[[Connection], Awaitable[datetime | None]],
    longest: timedelta,
) -> None:
    """Sleep until the earliest due row (``next_due``) comes due, at most ``longest``.

    ``longest`` bounds how late work armed meanwhile by another transaction is noticed.
    """
    async with pool.acquire() as conn:
        due = await next_due(conn)
        now = await clock.now(conn)
    wait = longest if due is None else min(longest, due - now)
    await asyncio.sleep(max(0.005, wait.total_seconds()))
