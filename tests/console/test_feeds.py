"""The console's dead-letter feed takes every record of the ``.dlq`` topics as it is: whatever
its headers say, it is counted — under a service of this system or ``?``, at a time a calendar
can hold — and none is refused (a dead letter's dead letter would go nowhere)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services import build_service
from shared.settings import Settings
from tests.support.kafka import KafkaProbe
from tests.support.services import running
from tests.support.waiting import eventually

HOSTILE = {
    "the calendar's end": [("dlq_time", b"9999-12-31T23:59:59-14:00")],
    "the calendar's start": [("dlq_time", b"0001-01-01T00:00:00+14:00")],
    "no time zone": [("dlq_time", b"2026-12-01T15:24:24")],
    "a NUL in the consumer": [("dlq_consumer", b"int\x00ake.requests")],
    "a service of no one": [("dlq_consumer", b"mallory.requests")],
}


@pytest.mark.asyncio
async def test_forged_dead_letter_headers_are_counted_soberly_and_none_is_dead_lettered(
    settings: Settings,
) -> None:
    kafka = KafkaProbe(settings)
    console = build_service("console", settings)
    try:
        async with running(console):
            sent_at = datetime.now(UTC)
            for n, headers in enumerate(HOSTILE.values()):
                defaults = {"dlq_consumer": b"intake.requests", "dlq_reason": b"undecodable"}
                given = dict(headers)
                await kafka.publish(
                    "requests.incoming.dlq",
                    b"{}",
                    key=f"k{n}",
                    headers=[*{**defaults, **given}.items()],
                    partition=0,
                )
            rows = await eventually(
                lambda: console.pool.fetch(
                    "SELECT service, consumer, recorded_at FROM dead_letters_seen "
                    "WHERE topic LIKE '%requests.incoming.dlq' ORDER BY \"offset\""
                ),
                lambda found: len(found) == len(HOSTILE),
                what="every dead letter counted",
            )
            failed = await console.pool.fetchval("SELECT count(*) FROM dead_letters")
        assert [r["service"] for r in rows] == ["intake", "intake", "intake", "?", "?"]
        assert rows[3]["consumer"] == "int\ufffdake.requests"
        # A time no calendar holds, or one without its zone: when the broker took the record.
        for row in rows[:3]:
            assert abs((row["recorded_at"] - sent_at).total_seconds()) < 60, row
        assert failed == 0  # nothing failed: nothing for a .dlq.dlq topic
    finally:
        await kafka.close()
