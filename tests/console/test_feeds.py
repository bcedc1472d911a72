"""The console's dead-letter feed takes every record of the ``.dlq`` topics as it is, and counts
each under the service that sealed it — ``?`` when none did (anyone can write to a topic of a
broker without ACLs) — at a time a calendar can hold; none is refused (a dead letter's dead
letter would go nowhere)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from services import build_service
from services.console.feeds import _payloads
from shared.keys import KeyRing
from shared.provenance import seal_dead_letter
from shared.settings import Settings
from tests.support.kafka import KafkaProbe
from tests.support.services import running
from tests.support.waiting import eventually

DLQ = "requests.incoming.dlq"
HOSTILE = {
    "the calendar's end": [("dlq_time", b"9999-12-31T23:59:59-14:00")],
    "the calendar's start": [("dlq_time", b"0001-01-01T00:00:00+14:00")],
    "no time zone": [("dlq_time", b"2026-12-01T15:24:24")],
    "a NUL in the consumer": [("dlq_consumer", b"int\x00ake.requests")],
    "the console's name, not its letter": [("dlq_consumer", b"console.public-events")],
    "the console's name and an offset no table holds": [
        ("dlq_consumer", b"console.public-events"),
        ("dlq_topic", b"intake.events"),
        ("dlq_partition", b"0"),
        ("dlq_offset", b"99999999999999999999"),
    ],
    "the console's name and a letter it never wrote": [
        ("dlq_consumer", b"console.public-events"),
        ("dlq_topic", b"intake.events"),
        ("dlq_partition", b"0"),
        ("dlq_offset", b"5"),
    ],
    "the console's name and a NUL in the topic": [
        ("dlq_consumer", b"console.public-events"),
        ("dlq_topic", b"intake\x00.events"),
        ("dlq_partition", b"0"),
        ("dlq_offset", b"5"),
    ],
}


def headers(**given: bytes) -> list[tuple[str, bytes]]:
    found = {"dlq_consumer": b"intake.requests", "dlq_reason": b"undecodable", **given}
    return list(found.items())


@pytest.mark.asyncio
async def test_dead_letters_count_under_the_service_that_sealed_them_at_a_plausible_time(
    settings: Settings,
) -> None:
    kafka = KafkaProbe(settings)
    console = build_service("console", settings)
    intake_key = KeyRing.from_settings(settings).signing_key("intake")
    assert intake_key is not None
    try:
        async with running(console):
            sent_at = datetime.now(UTC)
            for n, given in enumerate(HOSTILE.values()):  # unsealed: anyone's
                await kafka.publish(
                    DLQ, b"{}", key=f"k{n}", headers=headers(**dict(given)), partition=0
                )
            # Sealed by intake, with a time past the calendar: intake's, at the record's time.
            sealed = headers(dlq_time=b"9999-12-31T23:59:59-14:00")
            sealed += seal_dead_letter(intake_key, sealed, b"{}")
            await kafka.publish(DLQ, b"{}", key="sealed", headers=sealed, partition=0)
            # ... and the same seal on another value: no one's.
            await kafka.publish(DLQ, b"{ }", key="resealed", headers=sealed, partition=0)
            # ... and with a forged reason before the sealed one (a reader takes the first):
            # no one's either.
            forged = [("dlq_reason", b"unauthenticated"), *sealed]
            await kafka.publish(DLQ, b"{}", key="prepended", headers=forged, partition=0)
            # The console's own dead letter (a record it cannot read): the console's.
            await kafka.publish("intake.events", b"{not json", key="poison")
            rows = await eventually(
                lambda: console.pool.fetch(
                    "SELECT service, consumer, topic, recorded_at FROM dead_letters_seen "
                    'ORDER BY topic, "offset"'
                ),
                lambda found: len(found) == len(HOSTILE) + 4,
                what="every dead letter counted",
            )
            failed = await console.pool.fetch("SELECT topic FROM dead_letters")
        assert [r["service"] for r in rows] == [
            "console",
            *["?"] * len(HOSTILE),
            "intake",
            "?",
            "?",
        ]
        assert rows[0]["topic"].endswith("intake.events.dlq")
        # The feed refused none: the console's one dead letter is the record it could not read.
        assert [r["topic"] for r in failed] == [settings.topic("intake.events")]
        assert rows[4]["consumer"] == "int\ufffdake.requests"
        # A time no calendar holds, or one without its zone: when the broker took the record.
        for row in [*rows[1:4], rows[1 + len(HOSTILE)]]:
            assert abs((row["recorded_at"] - sent_at).total_seconds()) < 60, row
    finally:
        await kafka.close()


def test_what_changed_is_told_in_notifications_postgresql_takes() -> None:
    """A batch of 2,000 tickets, a third of them moved through many groups: every ticket and
    every place it left is told, and no notification passes PostgreSQL's 8,000 bytes (over it,
    ``pg_notify`` fails the console's whole batch)."""
    ids = [str(uuid.UUID(int=n)) for n in range(2000)]
    left = {
        t: {(f"group-{g}", f"agent.{g}" if g % 2 else None) for g in range(n % 40)}
        for n, t in enumerate(ids)
        if n % 3 == 0
    }
    payloads = list(_payloads(ids, left, board=True))
    assert all(len(json.dumps(p).encode()) < 8000 for p in payloads)
    assert [t for p in payloads for t in p["tickets"]] == ids
    told = {t: {tuple(w) for w in was} for p in payloads for t, was in p["left"].items()}
    assert told == {t: was for t, was in left.items() if was}
    assert list(_payloads([], {}, board=True)) == [{"tickets": [], "left": {}, "board": True}]
