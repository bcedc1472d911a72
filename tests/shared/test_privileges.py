"""Least privilege in PostgreSQL, on a real server: connected as a service's role, its event store
can only grow, other schemas are out of reach, nothing can be created; a service refuses to start
unmigrated, or (outside local mode) as the owner."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import asyncpg
import pytest
import pytest_asyncio

from services import service_migrations
from services.intake.app import build as intake
from shared.database import connect, with_database
from shared.migrations import MigrationError, migrate
from shared.privileges import OWNER_ROLE, hand_over, role_problems
from shared.settings import Settings
from tests.support.infrastructure import SessionInfrastructure
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
    production = settings.replace(local_mode=False, notify_signing_secret="n" * 8 + "x" * 40)
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
