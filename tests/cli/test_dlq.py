"""`desk dlq`: dead letters are named by their service, so an operator replays the one they mean."""

from __future__ import annotations

import pytest

from services import service_migrations
from shared.clock import DatabaseClock
from shared.database import connect, create_pool
from shared.deadletter import DeadLetters, Record, list_dead_letters
from shared.kafka import make_producer
from shared.migrations import migrate
from shared.settings import Settings
from tests.cli.support import desk
from tests.support.kafka import KafkaProbe


async def dead_letter_in_intake_and_dispatch(settings: Settings, kafka: KafkaProbe) -> None:
    """One dead letter in each of two services: both get id 1 in their own tables."""
    await kafka.create("requests.incoming", "tickets.commands")
    producer = make_producer(settings, client_id="test-dlq")
    await producer.start()
    conn = await connect(settings.require_database_url())
    pool = await create_pool(settings, schema="public", application="test-dlq")
    try:
        for service, topic, value in (
            ("intake", "requests.incoming", b"intake's garbage"),
            ("dispatch", "tickets.commands", b"dispatch's garbage"),
        ):
            await migrate(conn, service, service_migrations(service))
            record = Record(settings.topic(topic), 0, 7, b"k", value, ())
            dead_letters = DeadLetters(producer, service, DatabaseClock(pool), settings)
            await dead_letters.record(
                conn, record, consumer=f"{service}.x", reason="undecodable", error="no", attempts=1
            )
    finally:
        await pool.close()
        await conn.close()
        await producer.stop()


async def replayed(settings: Settings) -> dict[str, list[bool]]:
    """Service -> whether each of its dead letters was replayed."""
    conn = await connect(settings.require_database_url())
    try:
        return {
            service: [
                d.replayed_at is not None
                for d in await list_dead_letters(conn, service, include_replayed=True)
            ]
            for service in ("intake", "dispatch")
        }
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_a_bare_id_is_refused_because_every_service_numbers_its_own(
    settings: Settings, kafka: KafkaProbe
) -> None:
    await dead_letter_in_intake_and_dispatch(settings, kafka)

    listed = await desk(settings, "dlq", "list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "intake/1" in listed.stdout and "dispatch/1" in listed.stdout

    bare = await desk(settings, "dlq", "replay", "1")
    assert bare.returncode != 0
    assert "intake/1" in bare.stdout and "dispatch/1" in bare.stdout  # it says which it could be
    assert await replayed(settings) == {"intake": [False], "dispatch": [False]}


@pytest.mark.asyncio
async def test_a_service_qualified_id_replays_that_dead_letter_only(
    settings: Settings, kafka: KafkaProbe
) -> None:
    await dead_letter_in_intake_and_dispatch(settings, kafka)

    result = await desk(settings, "dlq", "replay", "intake/1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert await replayed(settings) == {"intake": [True], "dispatch": [False]}
    [back] = await kafka.await_records(
        "requests.incoming", lambda r: r.header("dlq_replayed_from") == "intake/1"
    )
    assert back.value == b"intake's garbage"
    assert await kafka.read("tickets.commands", until=lambda rs: False, timeout=2) == []


@pytest.mark.asyncio
async def test_a_bare_id_is_read_in_the_one_service_named(
    settings: Settings, kafka: KafkaProbe
) -> None:
    await dead_letter_in_intake_and_dispatch(settings, kafka)

    result = await desk(settings, "dlq", "replay", "1", "--service", "dispatch")
    assert result.returncode == 0, result.stdout + result.stderr
    assert await replayed(settings) == {"intake": [False], "dispatch": [True]}


@pytest.mark.asyncio
async def test_naming_a_dead_letter_that_is_not_pending_replays_nothing(
    settings: Settings, kafka: KafkaProbe
) -> None:
    await dead_letter_in_intake_and_dispatch(settings, kafka)

    result = await desk(settings, "dlq", "replay", "intake/1", "dispatch/9")
    assert result.returncode != 0
    assert "dispatch/9" in result.stdout
    assert (await replayed(settings))["intake"] == [False]

    unknown = await desk(settings, "dlq", "replay", "billing/1")
    assert unknown.returncode != 0
    assert "billing" in unknown.stdout + unknown.stderr
