"""Least privilege in PostgreSQL, on a real server: connected as a service's role, its event store
can only grow, other schemas are out of reach, nothing can be created, and what the kernel does at
run time (purging claims, dead letters) is allowed; a service refuses to start unmigrated, or
(outside local mode) as the owner."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import asyncpg
import pytest
import pytest_asyncio

from services import service_migrations
from services.intake.app import build as intake
from shared.clock import DatabaseClock
from shared.database import connect, create_pool, with_database
from shared.deadletter import DeadLetters, Record
from shared.kafka import make_producer
from shared.migrations import MigrationError, migrate
from shared.privileges import OWNER_ROLE, hand_over, role_problems
from shared.retention import forget_processed
from shared.settings import Settings
from tests.support.infrastructure import SessionInfrastructure
from tests.support.kafka import KafkaProbe
from tests.support.services import migrated


@pytest_asyncio.fixture
async def as_intake(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection as intake's role, with intake and dispatch migrated (by the owner) and one
    event in intake's store."""
    url = await migrated(settings, "intake", service_migrations("intake"))
    await migrated(settings, "dispatch", service_migrations("dispatch"))
    conn = await connect(url, schema="intake")
    await conn.execute(
        "SELECT * FROM append_events(ARRAY['s-1'], ARRAY[0], ARRAY[gen_random_uuid()], "
        "ARRAY['test.thing.happened.v1'], ARRAY[NULL::text], ARRAY[now()], ARRAY['c'], "
        "ARRAY[NULL::text], ARRAY['{}'])"
    )
    yield conn
    await conn.close()


DENIED: list[tuple[str, str]] = [
    ("update its events", "UPDATE events SET type = 'x'"),
    ("delete its events", "DELETE FROM events"),
    ("truncate its events", "TRUNCATE events"),
    ("read another service's schema", "SELECT count(*) FROM dispatch.events"),
    ("write another service's tables", "DELETE FROM dispatch.processed_messages"),
    ("create a table", "CREATE TABLE mine (x int)"),
    ("create a sequence", "CREATE SEQUENCE request_number_1999"),
    ("create a temporary table", "CREATE TEMP TABLE scratch (x int)"),
    ("rewrite its migrations", "DELETE FROM schema_migrations"),
    ("rewrite its policy history", "UPDATE policy_history SET approved_by = 'x'"),
    ("forget its policy history", "DELETE FROM policy_history"),
    ("create a schema", "CREATE SCHEMA elsewhere"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("what", "sql"), DENIED, ids=[d[0] for d in DENIED])
async def test_a_service_role_is_refused(
    as_intake: asyncpg.Connection, what: str, sql: str
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_intake.execute(sql)
    assert await as_intake.fetchval("SELECT count(*) FROM events") == 1


@pytest.mark.asyncio
async def test_a_service_role_appends_reads_and_numbers_with_what_migrations_made(
    as_intake: asyncpg.Connection,
) -> None:
    assert await as_intake.fetchval("SELECT count(*) FROM events") == 1
    assert await role_problems(as_intake, "intake") == []
    # Each year's request-number sequence was made by the owner; other years share one.
    this_year = datetime.now(UTC).year
    assert await as_intake.fetchval("SELECT next_request_numbers($1, 1)", this_year) == 1
    assert await as_intake.fetchval("SELECT next_request_numbers($1, 1)", this_year) == 2
    assert await as_intake.fetchval("SELECT next_request_numbers(1999, 1)") == 1
    assert await as_intake.fetchval("SELECT to_regclass('request_number_1999')") is None
    # What a service writes at run time when a policy version comes into force.
    inserted = await as_intake.fetchval(
        "INSERT INTO policy_history (version, loaded_at, source) VALUES ('v1', now(), 'p.yaml') "
        "ON CONFLICT (version) DO NOTHING RETURNING true"
    )
    assert inserted is True
    assert await as_intake.fetchval("SELECT count(*) FROM policy_history") == 1


@pytest.mark.asyncio
async def test_a_service_role_purges_its_claims_and_records_and_publishes_its_dead_letters(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """What the kernel does at run time as the service's role: forget claims older than the
    retention (DELETE on processed_messages), record a dead letter and record it again on a
    redelivery, then publish it and mark it published (UPDATE on dead_letters)."""
    url = await migrated(settings, "intake", service_migrations("intake"))
    await kafka.create("requests.incoming.dlq")
    pool = await create_pool(settings, schema="intake", application="test-role", url=url)
    producer = make_producer(settings, client_id="test-role")
    await producer.start()
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_user") == "desk_intake"
            now = await conn.fetchval("SELECT clock_timestamp()")
            await conn.execute(
                "INSERT INTO processed_messages (consumer, message_id, processed_at) "
                "VALUES ('intake.requests', 'old', $1), ('intake.requests', 'new', $2)",
                now - timedelta(days=30),
                now,
            )
            assert await forget_processed(conn, now - timedelta(days=14)) == 1
            assert await conn.fetchval("SELECT array_agg(message_id) FROM processed_messages") == [
                "new"
            ]
            dead_letters = DeadLetters(producer, "intake", DatabaseClock(pool), settings)
            record = Record(settings.topic("requests.incoming"), 0, 7, b"k", b"garbage", ())
            for attempts in (1, 2):
                await dead_letters.record(
                    conn,
                    record,
                    consumer="intake.requests",
                    reason="undecodable",
                    error="not JSON",
                    attempts=attempts,
                )
        assert await dead_letters.publish_due(pool) == 1
        row = await pool.fetchrow("SELECT attempts, published_at, publish_due FROM dead_letters")
        assert row is not None
        assert (row["attempts"], row["publish_due"]) == (2, None)
        assert row["published_at"] is not None
        [published] = await kafka.await_records(
            "requests.incoming.dlq", lambda r: r.header("dlq_offset") == "7"
        )
        assert published.value == b"garbage"
    finally:
        await producer.stop()
        await pool.close()


@pytest.mark.asyncio
async def test_the_event_store_is_append_only_for_the_owner_too(
    settings: Settings, as_intake: asyncpg.Connection
) -> None:
    owner = await connect(settings.require_database_url(), schema="intake")
    try:
        for sql in ("UPDATE events SET type = 'x'", "DELETE FROM events", "TRUNCATE events"):
            with pytest.raises(asyncpg.PostgresError, match="append-only") as refused:
                await owner.execute(sql)
            assert refused.value.sqlstate == "SD403"
        assert await role_problems(owner, "intake") == [
            "connected as desk_owner, the owner of schema intake"
        ]
    finally:
        await owner.close()


@pytest.mark.asyncio
async def test_a_service_refuses_to_start_unmigrated(settings: Settings) -> None:
    service = intake(settings)  # nobody ran `desk migrate`
    with pytest.raises(MigrationError, match="intake is not migrated"):
        await service.app.start()


@pytest.mark.asyncio
async def test_outside_local_mode_a_service_refuses_to_run_as_the_owner(
    settings: Settings,
) -> None:
    production = settings.replace(
        local_mode=False,
        notify_signing_secret="n" * 8 + "x" * 40,
        master_key=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    )
    await migrated(production, "intake", service_migrations("intake"))
    service = intake(production)  # its URL is the owner's: no role of its own
    with pytest.raises(RuntimeError, match="owner of schema intake"):
        await service.app.start()


@pytest.mark.asyncio
async def test_schemas_a_superuser_made_before_are_handed_over_to_the_owner(
    settings: Settings, infrastructure: SessionInfrastructure
) -> None:
    """A data directory from before roles existed: `desk up` gives its schemas to the owner, who
    can then migrate and grant as usual."""
    database = urlsplit(settings.require_database_url()).path.lstrip("/")
    admin = await connect(with_database(infrastructure.admin_database_url, database))
    try:
        await migrate(admin, "intake", service_migrations("intake")[:3])  # as the old code did
        assert (
            await admin.fetchval(
                "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'intake'"
            )
            != OWNER_ROLE
        )
        await hand_over(admin, database, ["intake"])
    finally:
        await admin.close()
    url = await migrated(settings, "intake", service_migrations("intake"))
    conn = await connect(url, schema="intake")
    try:
        assert await conn.fetchval("SELECT next_request_numbers(2026, 1)") == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM events")
    finally:
        await conn.close()
