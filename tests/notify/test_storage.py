"""notify's ticket facts under concurrency: one ticket, two consumers, real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from services.notify import storage
from services.notify.app import build as notify
from services.notify.rules import NoticeFacts
from shared.database import Connection
from shared.settings import Settings
from tests.notify.support import ticket_id
from tests.support.services import running
from tests.support.waiting import eventually

TICKET = ticket_id(1)


async def read_locked(conn: Connection) -> dict[str, NoticeFacts]:
    async with conn.transaction():
        return await storage.lock_tickets(conn, [TICKET])


@pytest.mark.asyncio
async def test_two_batches_holding_one_ticket_take_turns(settings: Settings) -> None:
    """The receipt's batch and an early dispatch event's batch cannot both decide on stale facts:
    the second waits for the first and reads what it committed."""
    async with (
        running(notify(settings)) as service,
        service.pool.acquire() as first,
        service.pool.acquire() as second,
    ):
        async with first.transaction():
            assert await storage.lock_tickets(first, [TICKET]) == {}
            receipt = NoticeFacts(ticket_id=TICKET, number="REQ-2026-000001", email="a@b.cn")
            await storage.save_tickets(first, [receipt])
            later = asyncio.create_task(read_locked(second))

            async def blocked() -> int:
                return int(
                    await service.pool.fetchval(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND NOT granted AND pid = $1",
                        second.get_server_pid(),
                    )
                )

            await eventually(blocked, lambda n: n == 1, what="the second waits for the first")
            assert not later.done()
        facts = await asyncio.wait_for(later, 10)
    assert facts[TICKET].received and facts[TICKET].email == "a@b.cn"
