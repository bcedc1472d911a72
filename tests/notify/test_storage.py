"""notify's ticket facts under concurrency: one ticket, two consumers, real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from services import service_migrations
from services.notify import storage
from services.notify.app import build as notify
from services.notify.rules import Notice, NoticeFacts
from services.policy.notify import NoticeChannel
from shared.database import Connection, connect
from shared.migrations import migrate
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


@pytest.mark.asyncio
async def test_a_new_notice_is_due_at_once_even_after_the_clock_stepped_back(
    settings: Settings,
) -> None:
    """A notice goes out as soon as it is stored: a clock that steps back (an NTP correction,
    a restored host) must not hold it until the clock reaches its creation time again."""
    stored_at = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    notice = Notice(
        notice_key=f"{TICKET}:customer:acknowledgement",
        ticket_id=TICKET,
        number="REQ-2026-000001",
        cause_event_id=TICKET,
        recipient="customer",
        channel="email",
        address="a@b.cn",
        template="acknowledgement",
        language="en",
        subject="recorded",
        body="recorded",
    )
    conn = await connect(settings.require_database_url(), schema="notify")
    try:
        await migrate(conn, "notify", service_migrations("notify"))
        async with conn.transaction():
            assert await storage.enqueue(conn, [notice], "v1", stored_at) == {notice.notice_key}
        an_hour_earlier = stored_at - timedelta(hours=1)
        assert await storage.next_due(conn) <= an_hour_earlier  # type: ignore[operator]
        async with conn.transaction():
            claimed = await storage.claim(
                conn, an_hour_earlier, an_hour_earlier + timedelta(minutes=1), 10
            )
    finally:
        await conn.close()
    assert [d.notice_key for d in claimed] == [notice.notice_key]


def _notice(n: int, channel: NoticeChannel, address: str) -> Notice:
    return Notice(
        notice_key=f"{TICKET}:{n}",
        ticket_id=TICKET,
        number="REQ-2026-000001",
        cause_event_id=f"{TICKET}:{n}",
        recipient="customer",
        channel=channel,
        address=address,
        template="acknowledgement",
        language="en",
        subject="recorded",
        body="recorded",
    )


@pytest.mark.asyncio
async def test_a_backlog_for_one_destination_does_not_crowd_out_the_others(
    settings: Settings,
) -> None:
    """Three hundred emails owed to a relay that takes four at a time, then a webhook and a
    text: a claim with room for a hundred leases four emails, the webhook and the text. It
    used to number only the first hundred due rows by destination — all emails — so whatever
    came after a backlog for one receiver waited for the backlog to drain."""
    now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    emails = [_notice(n, "email", f"c{n}@example.com") for n in range(300)]
    others = [
        _notice(300, "webhook", "https://hooks.example.com/agents/li.na"),
        _notice(301, "sms", "+8613800000000"),
    ]
    conn = await connect(settings.require_database_url(), schema="notify")
    try:
        await migrate(conn, "notify", service_migrations("notify"))
        async with conn.transaction():
            await storage.enqueue(conn, emails, "v1", now)
            await storage.enqueue(conn, others, "v1", now)
        async with conn.transaction():
            claimed = await storage.claim(
                conn, now, now + timedelta(minutes=1), 100, room={"email": 4}, room_else=50
            )
        left = await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'pending'")
    finally:
        await conn.close()
    assert Counter(d.destination for d in claimed) == {
        "email": 4,
        "hooks.example.com": 1,
        "sms": 1,
    }
    assert [d.notice_key for d in claimed if d.channel == "email"] == [
        e.notice_key for e in emails[:4]
    ]  # a destination's own notices still go in order
    assert left == 296
